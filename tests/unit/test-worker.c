/* test-worker: jobs run on another thread, results come back on the loop, wait and cancel keep their word. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "tap.h"
#include "worker.h"

/* A gate the test opens: lets a job be caught while it runs, without sleeping. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool open;
	bool entered;
};

struct job {
	struct gate *gate;
	int result;
	pthread_t ran_on;
	bool finished;
};

struct seen {
	struct ev_loop *loop;
	int calls;
	int result;
	pthread_t called_on;
};

static void gate_init(struct gate *g)
{
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->open = g->entered = false;
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->mu);
}

/* Block until the job is inside it. */
static void gate_await_entry(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	while (!g->entered)
		pthread_cond_wait(&g->cond, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static int job_fn(void *arg)
{
	struct job *j = arg;

	j->ran_on = pthread_self();
	if (j->gate) {
		pthread_mutex_lock(&j->gate->mu);
		j->gate->entered = true;
		pthread_cond_broadcast(&j->gate->cond);
		while (!j->gate->open)
			pthread_cond_wait(&j->gate->cond, &j->gate->mu);
		pthread_mutex_unlock(&j->gate->mu);
	}
	j->finished = true;
	return j->result;
}

static void on_done(void *userdata, int result)
{
	struct seen *s = userdata;

	s->calls++;
	s->result = result;
	s->called_on = pthread_self();
	ev_break(s->loop, EVBREAK_ALL);
}

static void run_and_deliver(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct seen s = { .loop = loop };
	struct job j = { .result = -EIO };
	struct worker *w = NULL;

	ok(worker_new(&w, loop, on_done, &s) == 0, "worker_new");
	ok(!worker_busy(w), "a new worker is not busy");
	ok(worker_submit(w, job_fn, &j) == 0, "submit");
	ok(worker_busy(w), "busy once a job is submitted");
	ok(worker_submit(w, job_fn, &j) == -EBUSY, "a second submit before the done callback: -EBUSY");
	ev_run(loop, 0);
	ok(s.calls == 1 && s.result == -EIO, "done called once with the job's result (-EIO)");
	ok(!pthread_equal(j.ran_on, pthread_self()), "the job ran on another thread");
	ok(pthread_equal(s.called_on, pthread_self()), "the done callback ran on the loop's thread");
	ok(!worker_busy(w), "not busy after the done callback");

	j = (struct job){ .result = 7 };
	ok(worker_submit(w, job_fn, &j) == 0, "the thread takes a second job");
	ev_run(loop, 0);
	ok(s.calls == 2 && s.result == 7, "second result delivered (7)");
	worker_free(w);
	ev_loop_destroy(loop);
}

static void wait_keeps_the_callback(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct seen s = { .loop = loop };
	struct gate g;
	struct job j = { .gate = &g, .result = 3 };
	struct worker *w = NULL;

	gate_init(&g);
	worker_new(&w, loop, on_done, &s);
	worker_submit(w, job_fn, &j);
	gate_await_entry(&g);
	ok(!j.finished, "the job is held inside the gate");
	gate_open(&g);
	worker_wait(w);
	ok(j.finished, "worker_wait returns only once the job has finished");
	ok(s.calls == 0 && worker_busy(w), "after worker_wait the done callback is still due");
	ev_run(loop, 0);
	ok(s.calls == 1 && s.result == 3, "and it comes from the loop (3)");
	worker_free(w);
	ev_loop_destroy(loop);
}

static void cancel_forgets(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct seen s = { .loop = loop };
	struct gate g;
	struct job j1 = { .gate = &g, .result = 1 }, j2 = { .result = 2 };
	struct worker *w = NULL;

	gate_init(&g);
	worker_new(&w, loop, on_done, &s);
	worker_submit(w, job_fn, &j1);
	gate_await_entry(&g);
	gate_open(&g);
	worker_cancel(w);
	ok(j1.finished, "worker_cancel waits for the running job");
	ok(!worker_busy(w), "not busy after a cancel");
	/* The cancelled job's wake-up may still be on its way: only the second job may be reported. */
	ok(worker_submit(w, job_fn, &j2) == 0, "a new job may follow a cancel at once");
	ev_run(loop, 0);
	ok(s.calls == 1 && s.result == 2, "only the job after the cancel is reported (calls %d, result %d)",
	   s.calls, s.result);
	worker_free(w);
	ev_loop_destroy(loop);
}

static void free_with_a_job(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct seen s = { .loop = loop };
	struct gate g;
	struct job j = { .gate = &g, .result = 5 };
	struct worker *w = NULL, *idle = NULL;

	gate_init(&g);
	worker_new(&w, loop, on_done, &s);
	worker_submit(w, job_fn, &j);
	gate_await_entry(&g);
	gate_open(&g);
	worker_free(w);
	ok(j.finished && s.calls == 0, "worker_free waits for the job and reports nothing");
	ok(worker_new(&idle, loop, on_done, &s) == 0, "a worker that never ran a job");
	worker_free(idle);
	ok(true, "frees without ever starting a thread");
	worker_wait(NULL);
	worker_cancel(NULL);
	worker_free(NULL);
	ok(true, "wait, cancel and free accept NULL");
	ev_loop_destroy(loop);
}

int main(void)
{
	run_and_deliver();
	wait_keeps_the_callback();
	cancel_forgets();
	free_with_a_job();
	return done_testing();
}
