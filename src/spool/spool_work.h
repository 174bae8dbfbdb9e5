/* workfiles: custody of a connection's files in .work/, rejected/, failed/ and done/; never through a link, logs nothing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "state/state_journal.h"
#include "util/layout.h"

/*
 * Owns the paths and the two directory descriptors it opens on demand (the connection's
 * directory and its .work/). Every function returns 0 / a fd / a negative errno; a @fixed
 * flag says a directory was not as dcsyncd makes it (a link, or writable by others) and was
 * put right, for the caller to say so. Descriptors returned by spool_work_subdir and
 * spool_work_done are the caller's to close; the others stay the workfiles'.
 */
struct workfiles {
	char *dir;              /* <spool_dir>/<conn> */
	char *done_parent;      /* <state_dir>/done */
	char *done_dir;         /* <state_dir>/done/<conn> */
	const char *name;       /* <conn>, inside done_dir */
	int dirfd, workfd;
	long foreign;           /* the owner of the last directory set aside as not dcsyncd's, or -1 */
};

int spool_work_init(struct workfiles *w, const char *spool_dir, const char *state_dir, const char *conn);
void spool_work_release(struct workfiles *w);
/* The connection's directory was removed: what was opened in it is forgotten. */
void spool_work_forget(struct workfiles *w);

int spool_work_dir(struct workfiles *w);
int spool_work_work(struct workfiles *w, bool *fixed);
/* rejected/ or failed/: with @create made (0750) if missing; -ENOENT without. */
int spool_work_subdir(struct workfiles *w, const char *sub, bool create, bool *fixed);
int spool_work_done(struct workfiles *w, bool *fixed);

/* <id>-<name> in .work/, <name>.rejected.ndjson in rejected/: legal names, see layout_name. */
void spool_work_work_name(uint64_t fid, const char *name, char *out);
void spool_work_rejected_name(const char *name, char *out);
void spool_work_identity(const struct stat *st, struct file_identity *id);

/* Move <id>-<name> from .work/ to @dstfd as <name>, or <id>-<name> if that is taken; the name in @dst. */
int spool_work_move(struct workfiles *w, uint64_t fid, const char *name, int dstfd, char *dst);
/*
 * fsync @dstfd and .work/: one per directory per batch, however many files moved. 0, or the
 * first failure as -errno: then the moves may not survive a crash, and the caller must not
 * journal the state that says they happened.
 */
int spool_work_sync(struct workfiles *w, int dstfd);
/* Its identity differs from @id (size or mtime): it changed since. False when it is not there. */
bool spool_work_changed(struct workfiles *w, uint64_t fid, const char *name, const struct file_identity *id);
/*
 * Open <id>-<name> of a journaled batch: the same file as @id, or it grown (*@grew). -ENOENT
 * gone, -ESTALE changed or not a regular file, any other errno may pass (EMFILE, EIO).
 */
int spool_work_reopen(struct workfiles *w, uint64_t fid, const char *name, const struct file_identity *id, bool *grew);
/* Whether @dirfd holds <name> or <id>-<name> as the file @id was (a copy across filesystems: its size, with @copied_ok). */
bool spool_work_holds(int dirfd, uint64_t fid, const char *name, const struct file_identity *id, bool copied_ok);

uint64_t spool_work_rejected_size(struct workfiles *w, const char *name);
/* Cut rejected/<name>.rejected.ndjson back to @size (lines written again on the way are not doubled). */
int spool_work_rejected_truncate(struct workfiles *w, const char *name, uint64_t size);
/* Append to it; *@replaced when something not dcsyncd's was there and was removed first. */
int spool_work_rejected_append(struct workfiles *w, const char *name, const void *buf, size_t len, bool *fixed,
			      bool *replaced);
/* failed/<failed_name>.error.json, atomically. */
int spool_work_error_json(int failedfd, const char *failed_name, const void *buf, size_t len);
