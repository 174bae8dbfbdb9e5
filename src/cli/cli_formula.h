/* formula: build and check Data Connection formulas, DC_{UUID}:{key}:{params}:{field}:{fallback}. */
#pragma once
/*
 * Contract. No state: a struct formula owns its strings (cli_formula_release frees them) and the
 * string cli_formula_build makes is the caller's to free; arguments are borrowed for the call.
 * May call: libc only.
 */

#include <stddef.h>

/* One formula's five segments; uuid without its "DC_" prefix. */
struct formula {
	char uuid[37];
	char *key;              /* primary key: usually a personalization tag such as [%CUSTOMER_ID%] */
	char *params;           /* API parameters: "" for upload connections */
	char *field;            /* return field */
	char *fallback;         /* shown when the lookup fails; may be "" */
};

/*
 * Build a formula into *out (malloc'd). @uuid may carry the "DC_" prefix or not; @params and
 * @fallback may be NULL for "". Refused with -EINVAL and a reason in @err (may be NULL):
 * a UUID that is not 8-4-4-4-12 hex digits; a key that is not a tag [%NAME%] (NAME: A-Z 0-9 _);
 * an empty field; text containing ':' or a control character (a line break included), which
 * would break the segments; a field containing "[%" or "%]"; params or fallback whose tag
 * brackets do not pair up.
 */
int cli_formula_build(char **out, const char *uuid, const char *key_tag, const char *params,
		  const char *field, const char *fallback, char *err, size_t errlen);

/*
 * Check @text (the formula alone, no surrounding blanks) and split it into @f; release with
 * cli_formula_release(). -EINVAL with the first problem in @err: a control character (column given),
 * not five segments (count given), no "DC_" prefix, a bad UUID, an empty key or field,
 * tag brackets that do not pair up ("[%" without "%]", or a stray "%]"; column given), a tag
 * bracket in the field. Columns count bytes from 1. -ENOMEM leaves @f empty.
 */
int cli_formula_parse(const char *text, struct formula *f, char *err, size_t errlen);
/* Free the segments and empty @f; safe on an emptied or zeroed formula. */
void cli_formula_release(struct formula *f);

/*
 * The known names closest to a misspelt @field, for "did you mean": edit distance counting
 * an insertion, deletion, substitution or swap of neighbours as one, ASCII case ignored, at
 * most a third of the field's length (at least 1). Closest first, ties in @known order; a name
 * identical to @field is not suggested, nor are names longer than 255 bytes. Returns how many
 * were stored in @out (at most @max_out, and at most 16).
 */
size_t cli_formula_suggest(const char *field, const char *const *known, size_t n_known,
		       const char **out, size_t max_out);
