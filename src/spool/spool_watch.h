/* watch: inotify on one connection directory, telling names that arrive and counting each name's opens. */
#pragma once

#include <ev.h>

/*
 * Contract.
 * Owns: its inotify fd and io watcher, a copy of the directory's path, the count of opens per
 * name, and the names read while counting opens, told to the owner later from the loop.
 * Borrows: the loop, and @ops' userdata, for as long as the watch lives.
 * May call: inotify, libev, log (overflow and read errors, naming the directory); the owner's
 * ops, from the loop only: never from inside spool_watch_open_count(), which the owner calls.
 */

/*
 * inotify on one connection directory. @on_name is called for each name written (closed after
 * writing) or renamed into it; @on_attrib for a name whose mode, owner or times changed (a
 * refused file made readable); @on_overflow when events were lost (rescan); @on_gone when the
 * directory was removed or moved away (make it again, then spool_watch_rewatch).
 */
struct watch;
struct watch_ops {
	void (*on_name)(void *userdata, const char *name);
	void (*on_overflow)(void *userdata);
	void (*on_gone)(void *userdata);
	void (*on_attrib)(void *userdata, const char *name);    /* may be NULL */
};

int spool_watch_new(struct watch **out, struct ev_loop *loop, const char *dir,
	      const struct watch_ops *ops, void *userdata);
void spool_watch_free(struct watch *w);
int spool_watch_rewatch(struct watch *w);
/*
 * How many opens of @name are not closed yet, as inotify told: 0 means nobody has it open, for
 * a file that appeared while we watched. -1: not known (it was there before, events were lost,
 * or more names were counted than WATCH_NAMES_MAX). A count can be too high (the kernel merges
 * a close with the same close just before it, not yet read): the owner must not trust a count
 * above 0 for ever.
 */
int spool_watch_open_count(struct watch *w, const char *name);
