/* test-worker: jobs run on another thread, results come back on the loop, wait and cancel keep their word. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "tap.h"
#include "record/record_worker.h"

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

/* A loop, a worker reporting into @s, and a gate for jobs that must be caught running. */
struct fixture {
	struct ev_loop *loop;
	struct seen s;
	struct gate g;
	struct worker *w;
};

static int setup(struct fixture *f)
{
	f->loop = ev_loop_new(EVFLAG_AUTO);
	f->s = (struct seen){ .loop = f->loop };
	gate_init(&f->g);
	f->w = NULL;
	return record_worker_new(&f->w, f->loop, on_done, &f->s);
}

static void teardown(struct fixture *f)
{
	record_worker_free(f->w);
	ev_loop_destroy(f->loop);
}

static void run_and_deliver(void)
{
	struct fixture f;
	struct seen *s = &f.s;
	struct job j = { .result = -EIO };
	struct worker *w;

	ok(setup(&f) == 0, "record_worker_new");
	w = f.w;
	ok(!record_worker_busy(w), "a new worker is not busy");
	ok(record_worker_submit(w, job_fn, &j) == 0, "submit");
	ok(record_worker_busy(w), "busy once a job is submitted");
	ok(record_worker_submit(w, job_fn, &j) == -EBUSY, "a second submit before the done callback: -EBUSY");
	ev_run(f.loop, 0);
	ok(s->calls == 1 && s->result == -EIO, "done called once with the job's result (-EIO)");
	ok(!pthread_equal(j.ran_on, pthread_self()), "the job ran on another thread");
	ok(pthread_equal(s->called_on, pthread_self()), "the done callback ran on the loop's thread");
	ok(!record_worker_busy(w), "not busy after the done callback");

	j = (struct job){ .result = 7 };
	ok(record_worker_submit(w, job_fn, &j) == 0, "the thread takes a second job");
	ev_run(f.loop, 0);
	ok(s->calls == 2 && s->result == 7, "second result delivered (7)");
	teardown(&f);
}

static void wait_keeps_the_callback(void)
{
	struct fixture f;
	struct job j = { .gate = &f.g, .result = 3 };

	setup(&f);
	record_worker_submit(f.w, job_fn, &j);
	gate_await_entry(&f.g);
	ok(!j.finished, "the job is held inside the gate");
	gate_open(&f.g);
	record_worker_wait(f.w);
	ok(j.finished, "record_worker_wait returns only once the job has finished");
	ok(f.s.calls == 0 && record_worker_busy(f.w), "after record_worker_wait the done callback is still due");
	ev_run(f.loop, 0);
	ok(f.s.calls == 1 && f.s.result == 3, "and it comes from the loop (3)");
	teardown(&f);
}

static void cancel_forgets(void)
{
	struct fixture f;
	struct job j1 = { .gate = &f.g, .result = 1 }, j2 = { .result = 2 };

	setup(&f);
	record_worker_submit(f.w, job_fn, &j1);
	gate_await_entry(&f.g);
	gate_open(&f.g);
	record_worker_cancel(f.w);
	ok(j1.finished, "record_worker_cancel waits for the running job");
	ok(!record_worker_busy(f.w), "not busy after a cancel");
	/* The cancelled job's wake-up may still be on its way: only the second job may be reported. */
	ok(record_worker_submit(f.w, job_fn, &j2) == 0, "a new job may follow a cancel at once");
	ev_run(f.loop, 0);
	ok(f.s.calls == 1 && f.s.result == 2, "only the job after the cancel is reported (calls %d, result %d)",
	   f.s.calls, f.s.result);
	teardown(&f);
}

/* Threads of this process now, from /proc: a worker that must not start one is seen not to. */
static int thread_count(void)
{
	char line[256];
	int n = -1;
	FILE *f = fopen("/proc/self/status", "re");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	if (f)
		fclose(f);
	return n;
}

static void free_with_a_job(void)
{
	struct fixture f;
	struct job j = { .gate = &f.g, .result = 5 };
	struct worker *idle = NULL;
	int before;

	setup(&f);
	record_worker_submit(f.w, job_fn, &j);
	gate_await_entry(&f.g);
	gate_open(&f.g);
	record_worker_free(f.w);
	f.w = NULL;
	ok(j.finished && f.s.calls == 0, "record_worker_free waits for the job and reports nothing");
	before = thread_count();
	ok(record_worker_new(&idle, f.loop, on_done, &f.s) == 0 && thread_count() == before,
	   "a worker that never ran a job starts no thread (%d threads)", before);
	record_worker_free(idle);
	ok(thread_count() == before, "and is freed without one");
	/* NULL is accepted: a crash here fails the test. */
	record_worker_wait(NULL);
	record_worker_cancel(NULL);
	record_worker_free(NULL);
	teardown(&f);
}

int main(void)
{
	run_and_deliver();
	wait_keeps_the_callback();
	cancel_forgets();
	free_with_a_job();
	return done_testing();
}
