// A fake libnccl.so.2 for testing collective/nccl without GPUs: "device
// memory" is host memory (the fake gorgonia.org/cu), communicators of one
// world live in one process, each with a worker thread that runs its queued
// operations in order, meeting its peers at a rendezvous per operation.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <math.h>

enum { OP_ALLREDUCE = 1, OP_BCAST, OP_ALLGATHER, OP_GROUP };
enum { P_SEND = 1, P_RECV, P_BCAST };

typedef struct { int kind; const void *s; void *r; size_t n; int dt, peer; } part;
typedef struct op {
  int kind; const void *s; void *r; size_t n; int dt, redop, root;
  part *parts; int nparts;
  void *stream; struct op *next;
} op;

struct world;
typedef struct comm {
  struct world *w; int rank, dev;
  pthread_t th; int stop, aborted, asyncerr;
  op *head, *tail; long queued, done;
} comm;
typedef struct world {
  int n; comm **c;
  pthread_mutex_t mu; pthread_cond_t cv;
  op **posted; long *seq;  // per rank: current op and its sequence number
  long gen; int arrived;   // phase barrier
  struct splitin *tab; int sarrived; long sgen;
} world;

static pthread_mutex_t gmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gcv = PTHREAD_COND_INITIALIZER;
// pending ops per stream
typedef struct { void *s; long n; } spend;
static spend pend[4096]; static int npend;
static void pend_add(void *s, long d) {
  pthread_mutex_lock(&gmu);
  int i; for (i = 0; i < npend && pend[i].s != s; i++) {}
  if (i == npend) { pend[npend].s = s; pend[npend].n = 0; npend++; }
  pend[i].n += d;
  pthread_cond_broadcast(&gcv);
  pthread_mutex_unlock(&gmu);
}
long fake_total(void) {
  long n = 0; pthread_mutex_lock(&gmu);
  for (int i = 0; i < npend; i++) n += pend[i].n;
  pthread_mutex_unlock(&gmu); return n;
}
long fake_pending(void *s) {
  long n = 0; pthread_mutex_lock(&gmu);
  for (int i = 0; i < npend; i++) if (pend[i].s == s) n = pend[i].n;
  pthread_mutex_unlock(&gmu); return n;
}

static size_t esz(int dt) { return dt == 8 ? 8 : 4; }

// barrier among the world's workers; fails (returns 1) if me is aborted.
static int wbarrier(world *w, comm *me) {
  long g = w->gen;
  if (++w->arrived == w->n) { w->arrived = 0; w->gen++; pthread_cond_broadcast(&w->cv); return 0; }
  while (w->gen == g) {
    if (me->aborted) { w->arrived--; return 1; }
    pthread_cond_wait(&w->cv, &w->mu);
  }
  return 0;
}

static double get(const void *p, int dt, size_t i) { return dt == 8 ? ((const double *)p)[i] : ((const float *)p)[i]; }
static void put(void *p, int dt, size_t i, double v) { if (dt == 8) ((double *)p)[i] = v; else ((float *)p)[i] = (float)v; }

static void run(comm *me, op *o, long seq) {
  world *w = me->w;
  pthread_mutex_lock(&w->mu);
  w->posted[me->rank] = o; w->seq[me->rank] = seq;
  pthread_cond_broadcast(&w->cv);
  for (;;) {  // all ranks posted op seq?
    int all = 1;
    for (int r = 0; r < w->n; r++) if (w->seq[r] != seq) all = 0;
    if (all) break;
    if (me->aborted) { me->asyncerr = 6; pthread_mutex_unlock(&w->mu); return; }
    pthread_cond_wait(&w->cv, &w->mu);
  }
  if (wbarrier(w, me)) { me->asyncerr = 6; pthread_mutex_unlock(&w->mu); return; }
  // phase 1: compute into a private buffer (all reads of peers' inputs)
  void *tmp = NULL;
  if (o->kind == OP_ALLREDUCE) {
    tmp = malloc(o->n * 8 + 8);
    for (size_t i = 0; i < o->n; i++) {
      double a = get(w->posted[0]->s, o->dt, i);
      if (o->dt == 7) a = (float)a;
      for (int r = 1; r < w->n; r++) {
        double b = get(w->posted[r]->s, o->dt, i);
        // NCCL's FuncMax/FuncMin on floats are fmax/fmin: a NaN operand is
        // dropped, the sign of a zero result is unspecified.
        if (o->redop == 0) a = a + b; else if (o->redop == 2) a = fmax(a, b); else a = fmin(a, b);
        if (o->dt == 7) a = (float)a;
      }
      ((double *)tmp)[i] = a;
    }
  } else if (o->kind == OP_BCAST) {
    op *ro = w->posted[o->root];
    tmp = malloc(o->n * esz(o->dt) + 8); memcpy(tmp, ro->s, o->n * esz(o->dt));
  } else if (o->kind == OP_ALLGATHER) {
    tmp = malloc(o->n * w->n * esz(o->dt) + 8);
    for (int r = 0; r < w->n; r++) memcpy((char *)tmp + r * o->n * esz(o->dt), w->posted[r]->s, o->n * esz(o->dt));
  } else if (o->kind == OP_GROUP) {
    // per part: a private copy of what it receives
    void **bufs = calloc(o->nparts + 1, sizeof(void *));
    int bcastIdx = 0;
    for (int k = 0; k < o->nparts; k++) {
      part *p = &o->parts[k];
      if (p->kind == P_RECV) {
        // k-th recv from peer matches the peer's send to me, in order
        int myidx = 0; for (int j = 0; j < k; j++) if (o->parts[j].kind == P_RECV && o->parts[j].peer == p->peer) myidx++;
        op *po = w->posted[p->peer]; int cnt = 0; part *src = NULL;
        for (int j = 0; j < po->nparts; j++) if (po->parts[j].kind == P_SEND && po->parts[j].peer == me->rank) { if (cnt++ == myidx) { src = &po->parts[j]; break; } }
        if (!src || src->n != p->n) { fprintf(stderr, "fakenccl: unmatched recv\n"); abort(); }
        bufs[k] = malloc(p->n * esz(p->dt) + 8); memcpy(bufs[k], src->s, p->n * esz(p->dt));
      } else if (p->kind == P_BCAST) {
        op *po = w->posted[p->peer]; int cnt = 0; part *src = NULL;
        for (int j = 0; j < po->nparts; j++) if (po->parts[j].kind == P_BCAST) { if (cnt++ == bcastIdx) { src = &po->parts[j]; break; } }
        bcastIdx++;
        if (!src || src->n != p->n || src->peer != p->peer) { fprintf(stderr, "fakenccl: unmatched bcast\n"); abort(); }
        bufs[k] = malloc(p->n * esz(p->dt) + 8); memcpy(bufs[k], src->s, p->n * esz(p->dt));
      }
    }
    tmp = bufs;
  }
  if (wbarrier(w, me)) { me->asyncerr = 6; pthread_mutex_unlock(&w->mu); return; }
  // phase 2: write own outputs
  if (o->kind == OP_ALLREDUCE) { for (size_t i = 0; i < o->n; i++) put(o->r, o->dt, i, ((double *)tmp)[i]); }
  else if (o->kind == OP_BCAST) memcpy(o->r, tmp, o->n * esz(o->dt));
  else if (o->kind == OP_ALLGATHER) memcpy(o->r, tmp, o->n * w->n * esz(o->dt));
  else if (o->kind == OP_GROUP) {
    void **bufs = tmp;
    for (int k = 0; k < o->nparts; k++) if (bufs[k]) { memcpy(o->parts[k].r, bufs[k], o->parts[k].n * esz(o->parts[k].dt)); free(bufs[k]); }
  }
  free(tmp);
  wbarrier(w, me);
  pthread_mutex_unlock(&w->mu);
}

static void *worker(void *arg) {
  comm *me = arg; long seq = 0;
  pthread_mutex_lock(&gmu);
  for (;;) {
    while (!me->head && !me->stop) pthread_cond_wait(&gcv, &gmu);
    if (!me->head && me->stop) break;
    op *o = me->head; me->head = o->next; if (!me->head) me->tail = NULL;
    pthread_mutex_unlock(&gmu);
    if (!me->aborted) run(me, o, ++seq);
    pend_add(o->stream, -1);
    free(o->parts); free(o);
    pthread_mutex_lock(&gmu);
    me->done++; pthread_cond_broadcast(&gcv);
  }
  pthread_mutex_unlock(&gmu);
  return NULL;
}

static __thread void *last_stream;
static __thread int in_group; static __thread op *grp; static __thread comm *grpc, *lastc;

static int submit(comm *c, op *o) {
  lastc = c; last_stream = o->stream;
  if (c->aborted) { free(o->parts); free(o); return 6; }
  pend_add(o->stream, 1);
  pthread_mutex_lock(&gmu);
  o->next = NULL; if (c->tail) c->tail->next = o; else c->head = o; c->tail = o; c->queued++;
  pthread_cond_broadcast(&gcv);
  pthread_mutex_unlock(&gmu);
  return 0;
}

static world *new_world(int n) {
  world *w = calloc(1, sizeof *w); w->n = n;
  w->c = calloc(n, sizeof(comm *)); w->posted = calloc(n, sizeof(op *)); w->seq = calloc(n, sizeof(long));
  pthread_mutex_init(&w->mu, NULL); pthread_cond_init(&w->cv, NULL);
  return w;
}
static comm *new_comm(world *w, int rank, int dev) {
  comm *c = calloc(1, sizeof *c); c->w = w; c->rank = rank; c->dev = dev; w->c[rank] = c;
  pthread_create(&c->th, NULL, worker, c); return c;
}

typedef struct { char internal[128]; } uid;
int ncclGetVersion(int *v) { *v = 99999; return 0; }
static long idctr;
typedef struct { long id; world *w; int joined; } idrec; static idrec ids[256]; static int nids;
int ncclGetUniqueId(uid *u) { memset(u, 0, sizeof *u); pthread_mutex_lock(&gmu); long id = ++idctr; pthread_mutex_unlock(&gmu); memcpy(u->internal, &id, sizeof id); return 0; }
int ncclCommInitRank(comm **out, int n, uid u, int rank) {
  long id; memcpy(&id, u.internal, sizeof id);
  pthread_mutex_lock(&gmu);
  int i; for (i = 0; i < nids && ids[i].id != id; i++) {}
  if (i == nids) { ids[nids].id = id; ids[nids].w = new_world(n); nids++; }
  world *w = ids[i].w; ids[i].joined++;
  pthread_mutex_unlock(&gmu);
  *out = new_comm(w, rank, 0);
  // block until all joined
  pthread_mutex_lock(&gmu); while (ids[i].joined < n) pthread_cond_wait(&gcv, &gmu); pthread_cond_broadcast(&gcv); pthread_mutex_unlock(&gmu);
  return 0;
}
int ncclCommInitAll(comm **out, int n, const int *devs) {
  for (int i = 0; i < n; i++) for (int j = 0; j < i; j++) if (devs[i] == devs[j]) return 5;
  world *w = new_world(n);
  for (int i = 0; i < n; i++) out[i] = new_comm(w, i, devs[i]);
  return 0;
}
static void stop(comm *c) {
  pthread_mutex_lock(&gmu); c->stop = 1; pthread_cond_broadcast(&gcv); pthread_mutex_unlock(&gmu);
  pthread_join(c->th, NULL);
}
int ncclCommDestroy(comm *c) { stop(c); return 0; }
int ncclCommAbort(comm *c) {
  c->aborted = 1;
  pthread_mutex_lock(&c->w->mu); pthread_cond_broadcast(&c->w->cv); pthread_mutex_unlock(&c->w->mu);
  stop(c); return 0;
}
int ncclCommGetAsyncError(comm *c, int *e) { *e = c->asyncerr; return 0; }
int ncclCommCount(comm *c, int *n) { *n = c->w->n; return 0; }
int ncclCommCuDevice(comm *c, int *d) { *d = c->dev; return 0; }
int ncclCommUserRank(comm *c, int *r) { *r = c->rank; return 0; }
const char *ncclGetErrorString(int r) { static char b[64]; snprintf(b, sizeof b, "fake nccl error %d", r); return b; }
const char *ncclGetLastError(comm *c) { return ""; }

static op *mk(int kind, const void *s, void *r, size_t n, int dt, void *st) {
  op *o = calloc(1, sizeof *o); o->kind = kind; o->s = s; o->r = r; o->n = n; o->dt = dt; o->stream = st; return o;
}
int ncclAllReduce(const void *s, void *r, size_t n, int dt, int red, comm *c, void *st) {
  if (in_group) return 5;
  op *o = mk(OP_ALLREDUCE, s, r, n, dt, st); o->redop = red; return submit(c, o);
}
int ncclAllGather(const void *s, void *r, size_t n, int dt, comm *c, void *st) {
  if (in_group) return 5;
  return submit(c, mk(OP_ALLGATHER, s, r, n, dt, st));
}
static void addpart(comm *c, part p, void *st) {
  if (!grp) { grp = mk(OP_GROUP, 0, 0, 0, 0, st); grpc = c; }
  grp->parts = realloc(grp->parts, (grp->nparts + 1) * sizeof(part)); grp->parts[grp->nparts++] = p;
}
int ncclBroadcast(const void *s, void *r, size_t n, int dt, int root, comm *c, void *st) {
  if (!in_group) { op *o = mk(OP_BCAST, s, r, n, dt, st); o->root = root; return submit(c, o); }
  part p = {P_BCAST, s, r, n, dt, root}; addpart(c, p, st); return 0;
}
int ncclSend(const void *s, size_t n, int dt, int peer, comm *c, void *st) {
  if (!in_group) return 5;
  part p = {P_SEND, s, 0, n, dt, peer}; addpart(c, p, st); return 0;
}
int ncclRecv(void *r, size_t n, int dt, int peer, comm *c, void *st) {
  if (!in_group) return 5;
  part p = {P_RECV, 0, r, n, dt, peer}; addpart(c, p, st); return 0;
}
int ncclGroupStart(void) { in_group++; return 0; }
int ncclGroupEnd(void) {
  if (--in_group == 0 && grp) { op *o = grp; comm *c = grpc; grp = NULL; grpc = NULL; return submit(c, o); }
  if (in_group == 0 && lastc) return submit(lastc, mk(OP_GROUP, 0, 0, 0, 0, last_stream));
  return 0;
}
// Split: synchronous, after the comm's queue drained.
typedef struct splitin { int color, key; comm *out; } splitin;
int ncclCommSplit(comm *c, int color, int key, comm **out, void *cfg) {
  pthread_mutex_lock(&gmu); while (c->done < c->queued) pthread_cond_wait(&gcv, &gmu); pthread_mutex_unlock(&gmu);
  world *w = c->w;
  pthread_mutex_lock(&w->mu);
  if (!w->tab) w->tab = calloc(w->n, sizeof(splitin));
  splitin *tab = w->tab;
  tab[c->rank].color = color; tab[c->rank].key = key; tab[c->rank].out = NULL;
  long g = w->sgen;
  if (++w->sarrived == w->n) {
    w->sarrived = 0;
    // build worlds per color
    for (int r = 0; r < w->n; r++) {
      if (tab[r].color < 0 || tab[r].out) continue;
      int m = 0; for (int q = 0; q < w->n; q++) if (tab[q].color == tab[r].color) m++;
      world *nw = new_world(m);
      int order[256], k = 0;
      for (int q = 0; q < w->n; q++) if (tab[q].color == tab[r].color) order[k++] = q;
      for (int a = 0; a < k; a++) for (int b = a + 1; b < k; b++)
        if (tab[order[b]].key < tab[order[a]].key || (tab[order[b]].key == tab[order[a]].key && order[b] < order[a])) { int t = order[a]; order[a] = order[b]; order[b] = t; }
      for (int a = 0; a < k; a++) tab[order[a]].out = new_comm(nw, a, w->c[order[a]]->dev);
    }
    w->sgen++; pthread_cond_broadcast(&w->cv);
  } else {
    while (w->sgen == g) pthread_cond_wait(&w->cv, &w->mu);
  }
  *out = tab[c->rank].out;
  pthread_mutex_unlock(&w->mu);
  return 0;
}
