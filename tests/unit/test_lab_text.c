/* test_lab_text.c — the text suite's data (lab/lab_text_data.c): on a hand-made tree that
 * holds every source path (fortune files, WordNet data files with their byte offsets, word
 * lists, dpkg file lists, gzipped man pages, source files, a licence), the parsers, the
 * normalisation, deduplication, class balance, a man page's paragraphs kept in one split,
 * the corpus, same seed same bytes; strictness (bad UTF-8, a wrong WordNet offset, a
 * missing package list, too few examples), each error naming its file; and, where the
 * Debian packages are installed, the real sources at the CI size. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "lab_text.h"

static const lab_text_sizes tiny = {2, 1, 1};

/* root + path, its directories created; gzip when the name ends in .gz. */
static void put(const char *root, const char *path, const char *text) {
    char full[1024];
    snprintf(full, sizeof full, "%s%s", root, path);
    for (char *p = full + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(full, 0755);
        *p = '/';
    }
    size_t n = strlen(full);
    if (n > 3 && !strcmp(full + n - 3, ".gz")) {
        gzFile f = gzopen(full, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, text, (unsigned)strlen(text)), (int)strlen(text));
        gzclose(f);
    } else {
        FILE *f = fopen(full, "wb");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
    }
}

/* A WordNet data file: a licence line, then one synset per (lexicographer file, j) with
 * its true byte offset. */
static void put_wordnet(const char *root, const char *pos, char type, const int *lex, int n) {
    char text[16384] = "  1 licence text\n", line[256];
    for (int k = 0; k < n; k++)
        for (int j = 0; j < 5; j++) {
            snprintf(line, sizeof line, "%08zu %02d %c 01 w%d 0 000 | %s gloss %d of file %d  \n",
                     strlen(text), lex[k], type, j, pos, j, lex[k]);
            strcat(text, line);
        }
    char path[64];
    snprintf(path, sizeof path, "/usr/share/wordnet/data.%s", pos);
    put(root, path, text);
}

static void put_fortunes(const char *root) {
    const char *names[] = {"computers", "men-women", "people", "politics", "science", "work"};
    for (int k = 0; k < 6; k++) {
        char text[1024] = "", entry[128], path[128];
        for (int j = 0; j < 5; j++) {
            snprintf(entry, sizeof entry, "%s fortune %d,\n\tsecond line\n%%\n", names[k], j);
            strcat(text, entry);
        }
        strcat(text, "  \n%\n"); /* an empty entry: left out */
        snprintf(path, sizeof path, "/usr/share/games/fortunes/%s", names[k]);
        put(root, path, text);
    }
}

static void put_words(const char *root) {
    const char *files[] = {"american-english", "ngerman", "french", "spanish", "italian"};
    const char *code[] = {"en", "de", "fr", "es", "it"};
    for (int k = 0; k < 5; k++) {
        /* "shared" is in two lists: dropped. Capitals, apostrophes, digits: left out. */
        char text[512], path[64];
        snprintf(text, sizeof text,
                 "Capital\nword's\nx1y\n%sa\n%sb\n%sc\n%sd\n%s\xc3\xa9t\xc3\xa9\n%s\n", code[k],
                 code[k], code[k], code[k], code[k], k < 2 ? "shared" : "only");
        snprintf(path, sizeof path, "/usr/share/dict/%s", files[k]);
        put(root, path, text);
    }
}

/* Sections 2 and 3 from manpages-dev, 4, 5 and 7 from manpages: three pages each with three
 * prose paragraphs, plus code, a table, NAME / SYNOPSIS text and a page that only includes
 * another (none of them examples). */
static void put_man(const char *root) {
    const char *sections[] = {"2", "3", "4", "5", "7"};
    char dev[2048] = "/.\n/usr/share/man\n", man[2048] = "/.\n";
    for (int k = 0; k < 5; k++)
        for (int pg = 0; pg < 4; pg++) {
            char path[128], page[2048];
            snprintf(path, sizeof path, "/usr/share/man/man%s/p%d.%s.gz", sections[k], pg,
                     sections[k]);
            if (pg == 3)
                snprintf(page, sizeof page, ".so man%s/p0.%s\n", sections[k], sections[k]);
            else
                snprintf(page, sizeof page,
                         ".\\\" a comment SKIPPED\n.TH P 1\n.SH NAME\np \\- SKIPPED\n"
                         ".SH SYNOPSIS\n.B SKIPPED\n.SH DESCRIPTION\nsect %s page %d para 0 has\n"
                         ".BR bold (2),\nand \\fIitalic\\fP \\(em text.\n.PP\n.nf\nSKIPPED code\n"
                         ".fi\nsect %s page %d para 1\n.TS\nSKIPPED table\n.TE\n\n"
                         "sect %s page %d para 2 \\*(lqquoted\\*(rq\n.PP\n"
                         "SKIPPED: a glyph escape that cuts a character \\(\xe2\x82\xac\n",
                         sections[k], pg, sections[k], pg, sections[k], pg);
            put(root, path, page);
            strcat(k < 2 ? dev : man, path);
            strcat(k < 2 ? dev : man, "\n");
        }
    put(root, "/var/lib/dpkg/info/manpages-dev.list", dev);
    put(root, "/var/lib/dpkg/info/manpages.list", man);
}

static void put_sources(const char *root) {
    const char *lists[] = {"libc6-dev:amd64", "libpython3.11-stdlib:amd64", "perl-modules-5.36",
                           "cmake-data"};
    const char *files[] = {"/usr/include/a.h", "/usr/lib/python3.11/a.py",
                           "/usr/share/perl/5.36.0/A/B.pm",
                           "/usr/share/cmake-3.25/Modules/A.cmake"};
    for (int k = 0; k < 4; k++) {
        char text[1024] = "}\n", line[128], list[256], path[128];
        for (int j = 0; j < 5; j++) {
            snprintf(line, sizeof line, "source line %d of language %d, long enough\n", j, k);
            strcat(text, line);
        }
        put(root, files[k], text);
        snprintf(list, sizeof list, "/.\n%s\n/usr/include/sub/skipped.h\n", files[k]);
        snprintf(path, sizeof path, "/var/lib/dpkg/info/%s.list", lists[k]);
        put(root, path, list);
    }
}

static char *make_tree(void) {
    char *root = tu_mkdtemp();
    put_fortunes(root);
    int noun[] = {5, 6, 13, 15, 18, 20, 7}, verb[] = {30, 32, 35, 38, 40, 41}, other[] = {0};
    put_wordnet(root, "noun", 'n', noun, 7);
    put_wordnet(root, "verb", 'v', verb, 6);
    put_wordnet(root, "adj", 's', other, 1);
    put_wordnet(root, "adv", 'r', other, 1);
    put_words(root);
    put_man(root);
    put_sources(root);
    put(root, "/usr/share/common-licenses/GPL-3", "The GNU General Public License\n");
    char link[1024];
    snprintf(link, sizeof link, "%s/usr/share/common-licenses/GPL", root);
    assert_int_equal(symlink("GPL-3", link), 0);
    put(root, "/var/lib/dpkg/info/base-files.list",
        "/.\n/usr/share/common-licenses\n/usr/share/common-licenses/GPL\n"
        "/usr/share/common-licenses/GPL-3\n");
    return root;
}

static uint64_t digest(const lab_text_data *d) {
    uint64_t h = 1469598103934665603ULL;
    for (int k = 0; k < LAB_TEXT_TASKS; k++) {
        const lab_text_set *sets[3] = {&d->task[k].train, &d->task[k].val, &d->task[k].test};
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < sets[s]->n; i++) {
                for (const char *p = sets[s]->text[i]; *p; p++)
                    h = (h ^ (unsigned char)*p) * 1099511628211ULL;
                h = (h ^ (uint64_t)sets[s]->y[i]) * 1099511628211ULL;
            }
    }
    for (int i = 0; i < d->docs; i++)
        for (const char *p = d->doc[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static const lab_text_set *find(const lab_text_task *t, const char *needle, int *which) {
    const lab_text_set *sets[3] = {&t->train, &t->val, &t->test};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < sets[s]->n; i++)
            if (strstr(sets[s]->text[i], needle)) {
                *which = s;
                return sets[s];
            }
    return NULL;
}

/* Every split holds sizes per class, every text is short, trimmed, in one split only. */
static void check_balanced(const lab_text_data *d, lab_text_sizes sz) {
    for (int k = 0; k < LAB_TEXT_TASKS; k++) {
        const lab_text_task *t = &d->task[k];
        const lab_text_set *sets[3] = {&t->train, &t->val, &t->test};
        int want[3] = {sz.train, sz.val, sz.test};
        for (int s = 0; s < 3; s++) {
            int count[LAB_TEXT_MAX_CLASSES] = {0};
            assert_int_equal(sets[s]->n, want[s] * t->classes);
            for (int i = 0; i < sets[s]->n; i++) {
                const char *x = sets[s]->text[i];
                size_t n = strlen(x);
                assert_true(n >= 3 && n <= LAB_TEXT_MAX_BYTES);
                assert_true(x[0] != ' ' && x[n - 1] != ' ' && !strstr(x, "  ") &&
                            !strpbrk(x, "\t\n\r"));
                count[sets[s]->y[i]]++;
                for (int s2 = 0; s2 < 3; s2++) /* no text in two splits (or twice in one) */
                    for (int j = 0; j < sets[s2]->n; j++)
                        if (s2 != s || j != i) assert_string_not_equal(x, sets[s2]->text[j]);
            }
            for (int c = 0; c < t->classes; c++)
                assert_int_equal(count[c], want[s]);
        }
    }
}

static void test_tree(void **state) {
    (void)state;
    char *root = make_tree();
    lab_text_data d, again, other;
    acem_error err = {{0}};
    assert_int_equal(lab_text_load(&d, root, tiny, 0, &err), 0);
    check_balanced(&d, tiny);
    assert_string_equal(d.task[0].name, "fortune");
    for (int i = 0; i < d.task[0].train.n; i++) /* "%" lines split entries; spaces collapsed */
        assert_non_null(strstr(d.task[0].train.text[i], " fortune ") &&
                                strstr(d.task[0].train.text[i], ", second line")
                            ? d.task[0].train.text[i]
                            : NULL);
    for (int i = 0; i < d.task[4].train.n; i++) /* words of letters, lower-case first */
        assert_null(strpbrk(d.task[4].train.text[i], "'0123456789C"));
    int s;
    const lab_text_set *set;
    for (int k = 0; k < LAB_TEXT_TASKS; k++) {
        assert_null(find(&d.task[k], "SKIPPED", &s));
        assert_null(find(&d.task[k], "shared", &s));
    }
    assert_null(find(&d.task[1], "file 7", &s)); /* noun.attribute is no noun_sense class */
    assert_non_null(find(&d.task[3], "noun gloss", &s));
    /* Man pages: escapes resolved, font macros' text kept, a page's paragraphs in one split. */
    const lab_text_task *man = &d.task[5];
    set = find(man, "para 0", &s);
    assert_non_null(set);
    int i = 0;
    while (!strstr(set->text[i], "para 0"))
        i++;
    assert_non_null(strstr(set->text[i], "has bold(2), and italic - text."));
    for (int k = 0; k < 5; k++)
        for (int pg = 0; pg < 3; pg++) {
            int first = -1;
            for (int q = 0; q < 3; q++) {
                char needle[64];
                snprintf(needle, sizeof needle, "sect %c page %d para %d", "23457"[k], pg, q);
                if (!find(man, needle, &s)) continue;
                if (first < 0) first = s;
                assert_int_equal(s, first);
            }
        }
    assert_non_null(find(man, "\"quoted\"", &s));
    /* The corpus: the licence (not its link), then every training text. */
    int train = 0;
    for (int k = 0; k < LAB_TEXT_TASKS; k++)
        train += d.task[k].train.n;
    assert_int_equal(d.docs, 1 + train);
    assert_string_equal(d.doc[0], "The GNU General Public License\n");
    assert_string_equal(d.doc[1], d.task[0].train.text[0]);
    /* Same seed, same bytes; another seed, another split. */
    assert_int_equal(lab_text_load(&again, root, tiny, 0, &err), 0);
    assert_int_equal(lab_text_load(&other, root, tiny, 1, &err), 0);
    assert_true(digest(&d) == digest(&again));
    assert_true(digest(&d) != digest(&other));
    lab_text_free(&d);
    lab_text_free(&again);
    lab_text_free(&other);
    tu_rmtree(root);
    free(root);
}

/* Loading fails with an error that names `want`. */
static void expect_error(const char *root, lab_text_sizes sz, const char *want) {
    lab_text_data d;
    acem_error err = {{0}};
    assert_int_not_equal(lab_text_load(&d, root, sz, 0, &err), 0);
    if (!strstr(err.msg, want)) fail_msg("error \"%s\" does not name \"%s\"", err.msg, want);
    assert_int_equal(d.docs, 0);
}

static void test_strict(void **state) {
    (void)state;
    char *root = make_tree(), path[1024];
    expect_error(root, (lab_text_sizes){2, 2, 2}, "class computers has 5 usable examples");
    put(root, "/usr/share/games/fortunes/work", "fine\n%\nbad \xc3\x28 byte\n%\n");
    expect_error(root, tiny, "fortunes/work: line 3: not valid UTF-8");
    put_fortunes(root);
    put(root, "/usr/share/games/fortunes/work", "no separator at all\n");
    expect_error(root, tiny, "fortunes/work: not a fortune file");
    put_fortunes(root);
    put(root, "/usr/share/wordnet/data.verb", "  1 licence\n00000099 30 v 01 w 0 000 | g  \n");
    expect_error(root, tiny,
                 "data.verb: line 2: offset field 00000099 but the line starts at byte 12");
    put(root, "/usr/share/wordnet/data.verb", "00000000 30 x 01 w 0 000 | g  \n");
    expect_error(root, tiny, "data.verb: line 1: not a WordNet data line");
    int verb[] = {30, 32, 35, 38, 40, 41};
    put_wordnet(root, "verb", 'v', verb, 6);
    put(root, "/usr/share/man/man2/p0.2.gz.tmp", "plain"); /* put() would compress it */
    snprintf(path, sizeof path, "%s/usr/share/man/man2/p0.2.gz", root);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(rename(tmp, path), 0);
    expect_error(root, tiny, "p0.2.gz: named .gz but not gzip data");
    put_man(root);
    snprintf(path, sizeof path, "%s/var/lib/dpkg/info/cmake-data.list", root);
    assert_int_equal(unlink(path), 0);
    expect_error(root, tiny, "no file list of package cmake-data");
    expect_error(root, (lab_text_sizes){0, 1, 1}, "at least 1");
    tu_rmtree(root);
    free(root);
}

/* The real sources, where scripts/deps.sh has installed them. */
static void test_debian(void **state) {
    (void)state;
    if (access("/usr/share/wordnet/data.noun", R_OK) ||
        access("/usr/share/games/fortunes/computers", R_OK)) {
        print_message("the text suite's Debian packages are not installed: skipped\n");
        skip();
    }
    lab_text_data d, again;
    acem_error err = {{0}};
    lab_text_sizes quick = lab_text_sizes_for(true);
    if (lab_text_load(&d, "", quick, 0, &err)) fail_msg("%s", err.msg);
    check_balanced(&d, quick);
    assert_int_equal(lab_text_load(&again, "", quick, 0, &err), 0);
    assert_true(digest(&d) == digest(&again));
    int train = 0;
    for (int k = 0; k < LAB_TEXT_TASKS; k++)
        train += d.task[k].train.n;
    assert_true(d.docs > train); /* the licences, then the training texts */
    assert_string_equal(d.doc[d.docs - train], d.task[0].train.text[0]);
    lab_text_free(&d);
    lab_text_free(&again);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree),
        cmocka_unit_test(test_strict),
        cmocka_unit_test(test_debian),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
