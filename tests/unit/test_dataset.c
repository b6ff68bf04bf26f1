/* test_dataset.c — eval/dataset.c: GLUE's TSV files in their distributed shapes (SST-2,
 * MRPC with its byte order mark and CRLF, CoLA without a header, MNLI, QQP, RTE/QNLI),
 * CSV with quotes and line breaks in fields, JSONL, the label rules, and hostile files
 * (each one error naming file:line and the problem). */
#include "dataset.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct cols_spec {
    const char *text, *pair, *label;
    eval_header header;
} cols_spec;

/* Reads name (written with data into a fresh directory) with the columns. */
static int read_with(const char *name, const char *data, size_t n, cols_spec cs,
                     const char *const *names, size_t n_names, eval_dataset *d, acem_error *err,
                     char **dir_out) {
    char *dir = tu_mkdtemp();
    char *path = tu_write(dir, name, data, n);
    eval_columns c = {cs.text, cs.pair, cs.label, cs.header, names, n_names};
    int rc = eval_dataset_read(path, &c, d, err);
    free(path);
    *dir_out = dir;
    return rc;
}

static void read_ok(const char *name, const char *data, cols_spec cs, const char *const *names,
                    size_t n_names, eval_dataset *d) {
    acem_error err = {{0}};
    char *dir;
    int rc = read_with(name, data, strlen(data), cs, names, n_names, d, &err, &dir);
    if (rc) fprintf(stderr, "unexpected error: %s\n", err.msg);
    assert_int_equal(rc, 0);
    tu_rmtree(dir);
    free(dir);
}

/* One error naming name:line (line 0: no line) and holding phrase. */
static void read_fails(const char *name, const char *data, size_t n, cols_spec cs, size_t line,
                       const char *phrase) {
    acem_error err = {{0}};
    eval_dataset d;
    char *dir;
    int rc = read_with(name, data, n, cs, NULL, 0, &d, &err, &dir);
    char where[256];
    snprintf(where, sizeof where, line ? "%s:%zu: " : "%s: ", name, line);
    if (rc != -1 || !strstr(err.msg, where) || !strstr(err.msg, phrase) || strchr(err.msg, '\n'))
        fprintf(stderr, "%s: wanted \"%s\" and \"%s\", got rc %d \"%s\"\n", name, where, phrase, rc,
                err.msg);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, where));
    assert_non_null(strstr(err.msg, phrase));
    assert_int_equal(d.n, 0);
    tu_rmtree(dir);
    free(dir);
}

static void test_glue_sst2(void **state) {
    (void)state;
    /* SST-2 dev.tsv: header "sentence\tlabel"; quotes are text (no quoting in GLUE's TSV) */
    const char *tsv = "sentence\tlabel\n"
                      "it 's a charming and often affecting journey . \t1\n"
                      "\"unflinchingly bleak and desperate \t0\n"
                      "the movie 's \"greatest\" moment\t1\n";
    eval_dataset d;
    read_ok("dev.tsv", tsv, (cols_spec){"sentence", NULL, "label", 0}, NULL, 0, &d);
    assert_int_equal(d.n, 3);
    assert_string_equal(d.text[0], "it 's a charming and often affecting journey . ");
    assert_string_equal(d.text[1], "\"unflinchingly bleak and desperate ");
    assert_string_equal(d.text[2], "the movie 's \"greatest\" moment");
    assert_null(d.pair);
    assert_int_equal(d.label[0], 1);
    assert_int_equal(d.label[1], 0);
    assert_int_equal(d.n_labels, 2);
    assert_string_equal(d.label_names[1], "1");
    assert_int_equal(d.line[0], 2);
    assert_int_equal(d.line[2], 4);
    eval_dataset_free(&d);
    /* the same by index, the header said */
    read_ok("dev.tsv", tsv, (cols_spec){"0", NULL, "1", EVAL_HEADER_YES}, NULL, 0, &d);
    assert_int_equal(d.n, 3);
    eval_dataset_free(&d);
    /* by index without saying so: the header row is data, and its label gives it away */
    read_fails("dev.tsv", tsv, strlen(tsv), (cols_spec){"0", NULL, "1", 0}, 2, "a header row");
}

static void test_glue_mrpc(void **state) {
    (void)state;
    /* MRPC: Microsoft's byte order mark, CRLF line ends, label in column 0 */
    const char *tsv = "\xEF\xBB\xBFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
                      "1\t1355540\t1355592\tHe said the foodservice pie business doesn't fit.\t"
                      "The foodservice pie business does not fit.\r\n"
                      "0\t2029631\t2029565\tMagnarelli said Racicot hated the Iraqi regime.\t"
                      "His wife said he was \"100 percent behind George Bush\".\r\n";
    eval_dataset d;
    read_ok("dev.tsv", tsv, (cols_spec){"#1 String", "#2 String", "Quality", 0}, NULL, 0, &d);
    assert_int_equal(d.n, 2);
    assert_string_equal(d.text[0], "He said the foodservice pie business doesn't fit.");
    assert_string_equal(d.pair[1], "His wife said he was \"100 percent behind George Bush\".");
    assert_int_equal(d.label[0], 1);
    assert_int_equal(d.label[1], 0);
    eval_dataset_free(&d);
}

static void test_glue_cola(void **state) {
    (void)state;
    /* CoLA train.tsv: no header; source, label, the author's mark (often empty), sentence */
    const char *tsv = "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one.\n"
                      "gj04\t0\t*\tThey drank the pub.\n"
                      "bc01\t1\t\tThe more we study verbs, the crazier they get.\n";
    eval_dataset d;
    read_ok("train.tsv", tsv, (cols_spec){"3", NULL, "1", 0}, NULL, 0, &d);
    assert_int_equal(d.n, 3);
    assert_string_equal(d.text[1], "They drank the pub.");
    assert_int_equal(d.label[1], 0);
    assert_int_equal(d.line[0], 1);
    eval_dataset_free(&d);
}

static void test_glue_pairs(void **state) {
    (void)state;
    /* MNLI dev_matched.tsv: 16 columns, gold_label last */
    const char *mnli =
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
        "label5\tgold_label\n"
        "0\t63735\t63735n\tslate\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tThe new rights are nice "
        "enough\tEveryone really likes the newest benefits \tneutral\tentailment\tneutral\t"
        "neutral\tneutral\tneutral\n"
        "1\t91383\t91383c\tgovernment\t( c )\t( d )\t(ROOT c)\t(ROOT d)\tThis site includes a "
        "list\tThe Government Executive articles housed on the website are not able to be "
        "searched .\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\t"
        "contradiction\n"
        "2\t755\t755e\ttelephone\t( e )\t( f )\t(ROOT e)\t(ROOT f)\tuh i don't know\tI like "
        "him\tentailment\tentailment\tentailment\tentailment\tentailment\tentailment\n";
    eval_dataset d;
    read_ok("dev_matched.tsv", mnli, (cols_spec){"sentence1", "sentence2", "gold_label", 0}, NULL,
            0, &d);
    assert_int_equal(d.n, 3);
    /* string labels without the model's names: ids in byte order */
    assert_int_equal(d.n_labels, 3);
    assert_string_equal(d.label_names[0], "contradiction");
    assert_string_equal(d.label_names[2], "neutral");
    assert_int_equal(d.label[0], 2);
    assert_int_equal(d.label[1], 0);
    assert_int_equal(d.label[2], 1);
    assert_string_equal(d.pair[2], "I like him");
    eval_dataset_free(&d);
    /* with the model's id2label (Hugging Face datasets' order) */
    static const char *const hf[] = {"entailment", "neutral", "contradiction"};
    read_ok("dev_matched.tsv", mnli, (cols_spec){"8", "9", "15", EVAL_HEADER_YES}, hf, 3, &d);
    assert_int_equal(d.label[0], 1);
    assert_int_equal(d.label[1], 2);
    assert_int_equal(d.label[2], 0);
    assert_string_equal(d.label_names[2], "contradiction");
    eval_dataset_free(&d);
    /* QQP and RTE / QNLI */
    read_ok("dev.tsv",
            "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so "
            "beautiful?\t0\n",
            (cols_spec){"question1", "question2", "is_duplicate", 0}, NULL, 0, &d);
    assert_string_equal(d.pair[0], "Why are hispanics so beautiful?");
    eval_dataset_free(&d);
    read_ok("dev.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\tChristopher Reeve had an "
            "accident.\tnot_entailment\n1\tYet, we now are discovering\tBacteria is "
            "winning.\tentailment\n",
            (cols_spec){"sentence1", "sentence2", "label", 0}, NULL, 0, &d);
    assert_int_equal(d.label[0], 1);
    assert_int_equal(d.label[1], 0);
    eval_dataset_free(&d);
}

static void test_csv(void **state) {
    (void)state;
    const char *csv = "text,other,label\r\n"
                      "\"a, quoted \"\"field\"\"\",x,pos\r\n"
                      "\"two\nlines\r\nand three\",,neg\r\n"
                      "plain,\"\",pos\r\n"
                      "\"\",y,neg";
    eval_dataset d;
    read_ok("data.csv", csv, (cols_spec){"text", "other", "label", 0}, NULL, 0, &d);
    assert_int_equal(d.n, 4);
    assert_string_equal(d.text[0], "a, quoted \"field\"");
    assert_string_equal(d.text[1], "two\nlines\r\nand three");
    assert_string_equal(d.pair[1], "");
    assert_string_equal(d.text[3], "");
    assert_int_equal(d.line[1], 3);
    assert_int_equal(d.line[2], 6);  /* the quoted line breaks count */
    assert_int_equal(d.label[0], 1); /* neg 0, pos 1 */
    assert_int_equal(d.label[1], 0);
    eval_dataset_free(&d);
    /* quoted header names */
    read_ok("q.CSV", "\"the text\",\"the, label\"\nhello,3\n",
            (cols_spec){"the text", NULL, "the, label", 0}, NULL, 0, &d);
    assert_int_equal(d.label[0], 3);
    assert_int_equal(d.n_labels, 4);
    eval_dataset_free(&d);
}

static void test_jsonl(void **state) {
    (void)state;
    const char *jl = "{\"sentence\": \"caf\\u00e9 \\\"ok\\\"\", \"label\": 1, \"idx\": 0}\n"
                     "{\"label\": 0, \"sentence\": \"naïve\\\\u0000 is text\"}\r\n"
                     "  {\"sentence\": \"x\", \"label\": 1}  \n";
    eval_dataset d;
    read_ok("d.jsonl", jl, (cols_spec){"sentence", NULL, "label", 0}, NULL, 0, &d);
    assert_int_equal(d.n, 3);
    assert_string_equal(d.text[0], "caf\xC3\xA9 \"ok\"");
    assert_string_equal(d.text[1], "naïve\\u0000 is text");
    assert_int_equal(d.label[0], 1);
    assert_int_equal(d.label[1], 0);
    eval_dataset_free(&d);
    read_ok("d.jsonl", "{\"q\": \"a\", \"s\": \"b\", \"y\": \"entailment\"}\n",
            (cols_spec){"q", "s", "y", 0}, NULL, 0, &d);
    assert_string_equal(d.pair[0], "b");
    assert_string_equal(d.label_names[0], "entailment");
    eval_dataset_free(&d);
}

static void test_hostile(void **state) {
    (void)state;
    cols_spec tl = {"text", NULL, "label", 0}, idx = {"0", NULL, "1", 0};
#define FAILS(name, data, cs, line, phrase)                                                        \
    read_fails(name, data, sizeof data - 1, cs, line, phrase)
    FAILS("r.tsv", "text\tlabel\na\t1\nb\t0\textra\n", tl, 3, "3 fields, the first row has 2");
    FAILS("r.tsv", "text\tlabel\na\t1\n\nb\t0\n", tl, 3, "1 fields");
    FAILS("r.csv", "text,label\n\"open,1\n", tl, 2, "not closed");
    FAILS("r.csv", "text,label\nab\"c,1\n", tl, 2, "quote inside an unquoted field");
    FAILS("r.csv", "text,label\n\"ab\"c,1\n", tl, 2, "followed by \"c\"");
    FAILS("r.csv", "text,label\n\"a\nb\",1\nc,1,2\n", tl, 4, "3 fields");
    FAILS("u.tsv", "text\tlabel\nok\t1\nbad \xC3\x28\t1\n", tl, 3, "not valid UTF-8");
    FAILS("u.tsv", "text\tlabel\nok\t1\n\xED\xA0\x80\t1\n", tl, 3, "not valid UTF-8");
    FAILS("n.tsv", "text\tlabel\nnul\0byte\t1\n", tl, 2, "a NUL byte");
    FAILS("c.tsv", "text\tlabel\na\t1\n", ((cols_spec){"sentence", NULL, "label", 0}), 0,
          "no column named \"sentence\"");
    FAILS("c.tsv", "a\t1\n", ((cols_spec){"5", NULL, "1", 0}), 0, "past the 2 columns");
    FAILS("c.tsv", "a\t1\n", ((cols_spec){"x", NULL, "1", EVAL_HEADER_NO}), 0, "0-based indexes");
    FAILS("e.tsv", "", tl, 0, "no rows");
    FAILS("e.tsv", "text\tlabel\n", tl, 0, "no examples");
    FAILS("l.tsv", "a\t1\nb\t\n", idx, 2, "the label is empty");
    FAILS("l.tsv", "a\t1\nb\tpos\n", idx, 2, "is not an integer while line 1's is");
    FAILS("l.tsv", "a\t70000\n", idx, 1, "at most 65536 classes");
    FAILS("x.txt", "a\t1\n", idx, 0, "unknown data format");
    FAILS("j.jsonl", "{\"text\": \"a\", \"label\": 1}\n[1]\n", tl, 2, "not one JSON object");
    FAILS("j.jsonl", "{\"text\": \"a\", \"label\": 1}\n\n", tl, 2, "not one JSON object");
    FAILS("j.jsonl", "{\"text\": \"a\", \"label\": 1} x\n", tl, 1, "not one JSON object");
    FAILS("j.jsonl", "{\"text\": \"a\\u0000b\", \"label\": 1}\n", tl, 1, "\\u0000");
    FAILS("j.jsonl", "{\"text\": \"a\"}\n", tl, 1, "no key \"label\"");
    FAILS("j.jsonl", "{\"text\": \"a\", \"text\": \"b\", \"label\": 1}\n", tl, 1, "appears twice");
    FAILS("j.jsonl", "{\"text\": 5, \"label\": 1}\n", tl, 1, "\"text\" is not a string");
    FAILS("j.jsonl", "{\"text\": \"a\", \"label\": 1.5}\n", tl, 1, "non-negative integer");
    FAILS("j.jsonl", "{\"text\": \"a\", \"label\": -1}\n", tl, 1, "non-negative integer");
    FAILS("j.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"\xff\", \"label\": 1}\n", tl, 2,
          "not valid UTF-8");
#undef FAILS
    /* a label the model does not have */
    static const char *const names[] = {"negative", "positive"};
    acem_error err = {{0}};
    eval_dataset d;
    char *dir;
    const char *tsv = "text\tlabel\na\tpositive\nb\t1\nc\tneutral\n";
    assert_int_equal(read_with("m.tsv", tsv, strlen(tsv), (cols_spec){"text", NULL, "label", 0},
                               names, 2, &d, &err, &dir),
                     -1);
    assert_non_null(strstr(err.msg, "m.tsv:4: label \"neutral\" is not one of the model's 2"));
    tu_rmtree(dir);
    free(dir);
    /* a file that is not there, a directory */
    eval_columns c = {"text", NULL, "label", 0, NULL, 0};
    assert_int_equal(eval_dataset_read("/nonexistent/d.tsv", &c, &d, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/d.tsv: cannot open"));
    dir = tu_mkdtemp();
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/dir.tsv", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(eval_dataset_read(sub, &c, &d, &err), -1);
    assert_non_null(strstr(err.msg, "dir.tsv: not a regular file"));
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glue_sst2), cmocka_unit_test(test_glue_mrpc),
        cmocka_unit_test(test_glue_cola), cmocka_unit_test(test_glue_pairs),
        cmocka_unit_test(test_csv),       cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
