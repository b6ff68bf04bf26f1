/* chat_templates.h — acem's own Jinja templates for the chat formats mergekit names in
 * `chat_template: NAME` (docs/config.md, "Tokenizers"). */
#ifndef ACEM_CHAT_TEMPLATES_H
#define ACEM_CHAT_TEMPLATES_H

/* The template for a format name mergekit accepts (chatml, llama3, alpaca), or NULL. */
const char *acem_chat_template_named(const char *name);

#endif
