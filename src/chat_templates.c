/* chat_templates.c — the chat formats behind mergekit's `chat_template: NAME`.
 *
 * mergekit resolves a name to a file of its own (mergekit/_data/chat_templates: alpaca,
 * chatml, exaone, llama3). acem does not bundle those files: each template below is written
 * from the format's published specification, for transformers' renderer (Jinja with
 * trim_blocks and lstrip_blocks; the variables messages, add_generation_prompt, bos_token).
 * tests/test_mergekit_tokenizer.py renders each on a fixed conversation and compares with
 * the string the specification gives. exaone is not here: see docs/config.md. */
#include "chat_templates.h"

#include <string.h>

typedef struct named_template {
    const char *name, *text;
} named_template;

static const named_template templates[] = {
    /* ChatML (OpenAI, openai-python's chatml.md, as Qwen's docs use it): every message is
     * <|im_start|>ROLE\nCONTENT<|im_end|>\n; the reply opens with <|im_start|>assistant\n. */
    {"chatml", "{% for message in messages %}"
               "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>\\n' }}"
               "{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    /* Llama 3 (Meta's "Model Cards & Prompt formats", Meta Llama 3): <|begin_of_text|> (the
     * tokenizer's bos_token) once, then per message
     * <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>, the content trimmed as
     * Meta's own template does; the reply opens with the assistant header and its \n\n. */
    {"llama3", "{% for message in messages %}"
               "{% if loop.first %}{{ bos_token }}{% endif %}"
               "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
               "message['content'] | trim + '<|eot_id|>' }}"
               "{% endfor %}"
               "{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    /* Alpaca (Stanford Alpaca's README, "the prompt"): the preamble (here the conversation's
     * last system message; none: empty), then blocks "### Instruction:\n...",
     * "### Input:\n..." (role user_context) and "### Response:\n...", each content trimmed and
     * every part separated by a blank line; the reply opens with "### Response:\n" unless the
     * last message is already the assistant's. */
    {"alpaca", "{% set system = messages | selectattr('role', 'equalto', 'system') | list %}"
               "{{ (system | last).content | trim if system else '' }}"
               "{% set heads = {'user': 'Instruction', 'user_context': 'Input', "
               "'assistant': 'Response'} %}"
               "{% for message in messages if message['role'] in heads %}"
               "{{ '\\n\\n### ' + heads[message['role']] + ':\\n' + message['content'] | trim }}"
               "{% endfor %}"
               "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
               "{{ '\\n\\n### Response:\\n' }}{% endif %}"},
};

const char *acem_chat_template_named(const char *name) {
    for (size_t i = 0; i < sizeof templates / sizeof *templates; i++)
        if (!strcmp(templates[i].name, name)) return templates[i].text;
    return NULL;
}
