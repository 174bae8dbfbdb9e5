/* jsonstr: append text as a JSON string literal, escaping what JSON and terminals need. */
#pragma once
/*
 * Contract. No state: it appends to the caller's buffer (grown with realloc; the caller frees
 * it) and borrows @s for the call. May call: libc only.
 */

#include <stdbool.h>
#include <stddef.h>

/* Append "…" to *buf (grown with realloc). Bytes that are not valid UTF-8 become \u00XX. */
int jsonstr_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n);
/* Append raw bytes. */
int jsonstr_raw(char **buf, size_t *len, size_t *cap, const char *s, size_t n);
/* True when @s is valid UTF-8 without control characters other than tab: text, not binary. */
bool jsonstr_is_text(const char *s, size_t n);
/* The value of one hex digit (as in \uXXXX), or -1. */
int jsonstr_hexval(unsigned char c);
