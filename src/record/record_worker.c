/* worker: one background thread that runs one job at a time and reports back on the event loop. */
/*
 * The loop thread and the worker meet only under the mutex: the job, its result and whether the
 * result is still to be delivered. The thread wakes the loop with ev_async_send(), the one libev
 * call that is safe from another thread; the async callback then runs the done callback on the
 * loop's thread, so the submitter never sees a callback from elsewhere. `pending` is the loop
 * thread's own view (submitted, not yet delivered or cancelled) and needs no lock.
 */
#include "record/record_worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

struct worker {
	struct ev_loop *loop;
	ev_async async;
	worker_done_fn done;
	void *userdata;
	pthread_t thread;
	bool started;
	bool pending;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	/* under mu */
	worker_job_fn job;      /* set from submit until the job has returned */
	void *arg;
	bool finished;          /* a result waits for the loop */
	int result;
	bool quit;
};

static void *run(void *p)
{
	struct worker *w = p;

	/* Shown by top -H and perf; the bench's profile looks for it. */
	pthread_setname_np(pthread_self(), "dcsyncd-parse");
	pthread_mutex_lock(&w->mu);
	for (;;) {
		worker_job_fn job;
		int r;

		while (!w->job && !w->quit)
			pthread_cond_wait(&w->cond, &w->mu);
		if (!w->job)
			break;
		job = w->job;
		pthread_mutex_unlock(&w->mu);
		r = job(w->arg);
		pthread_mutex_lock(&w->mu);
		w->job = NULL;
		w->result = r;
		w->finished = true;
		pthread_cond_broadcast(&w->cond);
		ev_async_send(w->loop, &w->async);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void async_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = a->data;
	bool finished;
	int r;

	(void)loop;
	(void)revents;
	pthread_mutex_lock(&w->mu);
	finished = w->finished;
	w->finished = false;
	r = w->result;
	pthread_mutex_unlock(&w->mu);
	/* A cancelled job's wake-up can arrive after the cancel: nothing is due then. */
	if (!finished || !w->pending)
		return;
	w->pending = false;
	w->done(w->userdata, r);
}

int record_worker_new(struct worker **out, struct ev_loop *loop, worker_done_fn done, void *userdata)
{
	struct worker *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->done = done;
	w->userdata = userdata;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cond, NULL);
	ev_async_init(&w->async, async_cb);
	w->async.data = w;
	ev_async_start(loop, &w->async);
	*out = w;
	return 0;
}

static int start(struct worker *w)
{
	sigset_t all, old;
	int r;

	/* Signals belong to the loop thread (libev's handlers, signalfd): the worker takes none. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&w->thread, NULL, run, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return -r;
	w->started = true;
	return 0;
}

int record_worker_submit(struct worker *w, worker_job_fn job, void *arg)
{
	int r;

	if (w->pending)
		return -EBUSY;
	if (!w->started && (r = start(w)) < 0)
		return r;
	pthread_mutex_lock(&w->mu);
	w->job = job;
	w->arg = arg;
	w->finished = false;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->mu);
	w->pending = true;
	return 0;
}

bool record_worker_busy(const struct worker *w)
{
	return w->pending;
}

void record_worker_wait(struct worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	while (w->job)
		pthread_cond_wait(&w->cond, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

void record_worker_cancel(struct worker *w)
{
	if (!w)
		return;
	record_worker_wait(w);
	pthread_mutex_lock(&w->mu);
	w->finished = false;
	pthread_mutex_unlock(&w->mu);
	w->pending = false;
}

void record_worker_free(struct worker *w)
{
	if (!w)
		return;
	record_worker_cancel(w);
	if (w->started) {
		pthread_mutex_lock(&w->mu);
		w->quit = true;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	ev_async_stop(w->loop, &w->async);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cond);
	free(w);
}
