/* chat_templates.c — the chat templates mergekit ships (mergekit/_data/chat_templates/NAME.jinja),
 * by the names its `chat_template:` key takes. They are data: the text a tokenizer_config.json
 * holds, kept verbatim so that a config naming one gives the bytes mergekit writes. */
#include "tokenizer_merge.h"

#include <string.h>

static const struct {
    const char *name, *text;
} templates[] = {
    {"alpaca", "{{ (messages|selectattr('role', 'equalto', 'system')|list|last).content|trim if "
               "(messages|selectattr('role', 'equalto', 'system')|list) else '' }}\n"
               "\n"
               "{% for message in messages %}\n"
               "{% if message['role'] == 'user' %}\n"
               "### Instruction:\n"
               "{{ message['content']|trim -}}\n"
               "{% if not loop.last %}\n"
               "\n"
               "\n"
               "{% endif %}\n"
               "{% elif message['role'] == 'assistant' %}\n"
               "### Response:\n"
               "{{ message['content']|trim -}}\n"
               "{% if not loop.last %}\n"
               "\n"
               "\n"
               "{% endif %}\n"
               "{% elif message['role'] == 'user_context' %}\n"
               "### Input:\n"
               "{{ message['content']|trim -}}\n"
               "{% if not loop.last %}\n"
               "\n"
               "\n"
               "{% endif %}\n"
               "{% endif %}\n"
               "{% endfor %}\n"
               "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}\n"
               "### Response:\n"
               "{% endif %}\n"},
    {"chatml", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
               "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\n"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"exaone", "{% for message in messages %}\n"
               "    {% if loop.first and message['role'] != 'system' %}\n"
               "        {{ '[|system|][|endofturn|]\\n' }}\n"
               "    {% endif %}\n"
               "    {{ '[|' + message['role'] + '|]' + message['content'] }}\n"
               "    {% if message['role'] == 'user' %}\n"
               "        {{ '\\n' }}\n"
               "    {% else %}\n"
               "        {{ '[|endofturn|]\\n' }}\n"
               "    {% endif %}\n"
               "{% endfor %}\n"
               "{% if add_generation_prompt %}\n"
               "    {{ '[|assistant|]' }}\n"
               "{% endif %}\n"},
    {"llama3", "{% set loop_messages = messages %}\n"
               "{% for message in loop_messages %}\n"
               "{% set content = '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}\n"
               "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}\n"
               "{{ content }}\n"
               "{% endfor %}\n"
               "{% if add_generation_prompt %}{{ "
               "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}\n"},
};

const char *tok_builtin_template(const char *name) {
    for (size_t i = 0; i < sizeof templates / sizeof *templates; i++)
        if (!strcmp(templates[i].name, name)) return templates[i].text;
    return NULL;
}
