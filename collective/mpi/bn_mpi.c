//go:build mpi

#include "bn_mpi.h"

#include <mpi.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

enum { BN_CTRL_TAG = 0x626e };

struct bn_comm {
	MPI_Comm comm;
	MPI_Comm ctrl;
	int rank, size;
	MPI_Request req;
	MPI_Request ctrlreq;
	pthread_mutex_t ctrlmu; // MPI_Test on ctrlreq from several threads
	int dead;               // ctrlreq was cancelled: no control messages any more
	int nchain;
	bn_comm *chain[BN_MAX_CHAIN];
	MPI_Request *sendreq; // size requests: the control message to each rank
	char ctrlbuf[BN_CTRL_MAX];
	char sendbuf[BN_CTRL_MAX];
};

static MPI_Op bn_ops[5];

// bn_triple is three contiguous doubles, (n, mean, M2): the element of the
// moments reduction, so that MPI never splits a triple between segments.
static MPI_Datatype bn_triple = MPI_DATATYPE_NULL;

// Counters of what the helpers allocate and free, for the tests
// (bn_counters): live bn_comm structs, MPI communicator handles created
// (MPI_Comm_dup, MPI_Comm_split, MPI_Comm_split_type) and freed.
static long bn_nstructs, bn_ncreated, bn_nfreed;

static void bn_count(long *n, long d) { __atomic_add_fetch(n, d, __ATOMIC_SEQ_CST); }

void bn_counters(long *structs, long *created, long *freed) {
	*structs = __atomic_load_n(&bn_nstructs, __ATOMIC_SEQ_CST);
	*created = __atomic_load_n(&bn_ncreated, __ATOMIC_SEQ_CST);
	*freed = __atomic_load_n(&bn_nfreed, __ATOMIC_SEQ_CST);
}

static void bn_comm_free(MPI_Comm *c) {
	if (*c == MPI_COMM_NULL) return;
	if (MPI_Comm_free(c) == MPI_SUCCESS) bn_count(&bn_nfreed, 1);
	*c = MPI_COMM_NULL;
}

static MPI_Datatype bn_type(int dt) {
	switch (dt) {
	case BN_F32: return MPI_FLOAT;
	case BN_F64: return MPI_DOUBLE;
	case BN_I64: return MPI_INT64_T;
	case BN_INT: return MPI_INT;
	}
	return MPI_DATATYPE_NULL;
}

// The reductions match Go's +, max and min: a NaN operand gives NaN,
// max(-0, +0) = +0, min(-0, +0) = -0. MPI calls them with inout = in op
// inout, in = the lower ranks' partial result; the ops are registered as
// non-commutative so that MPI keeps the rank order.
#define BN_DEFINE_OPS(T, SUFFIX)                                                    \
	static inline T bn_max_##SUFFIX(T a, T b) {                                     \
		if (a != a || b != b) return a + b;                                         \
		if (a == b) return signbit(a) ? b : a;                                      \
		return a > b ? a : b;                                                       \
	}                                                                               \
	static inline T bn_min_##SUFFIX(T a, T b) {                                     \
		if (a != a || b != b) return a + b;                                         \
		if (a == b) return signbit(a) ? a : b;                                      \
		return a < b ? a : b;                                                       \
	}                                                                               \
	static void bn_apply_##SUFFIX(const T *in, T *io, int n, int op) {              \
		int i;                                                                      \
		switch (op) {                                                               \
		case BN_SUM: for (i = 0; i < n; i++) io[i] = in[i] + io[i]; break;          \
		case BN_MAX: for (i = 0; i < n; i++) io[i] = bn_max_##SUFFIX(in[i], io[i]); break; \
		case BN_MIN: for (i = 0; i < n; i++) io[i] = bn_min_##SUFFIX(in[i], io[i]); break; \
		}                                                                           \
	}

BN_DEFINE_OPS(float, f32)
BN_DEFINE_OPS(double, f64)

static void bn_apply(void *in, void *io, int *len, MPI_Datatype *dt, int op) {
	if (*dt == MPI_FLOAT) bn_apply_f32(in, io, *len, op);
	else if (*dt == MPI_DOUBLE) bn_apply_f64(in, io, *len, op);
}
static void bn_op_sum(void *in, void *io, int *len, MPI_Datatype *dt) { bn_apply(in, io, len, dt, BN_SUM); }
static void bn_op_max(void *in, void *io, int *len, MPI_Datatype *dt) { bn_apply(in, io, len, dt, BN_MAX); }
static void bn_op_min(void *in, void *io, int *len, MPI_Datatype *dt) { bn_apply(in, io, len, dt, BN_MIN); }

// bn_op_moments merges (n, mean, M2) triples with Chan's rule, io = in ⊕ io
// (in holds the lower ranks): the arithmetic of kernel.MergeMoments, in the
// same order. An empty operand (n = 0) leaves the other unchanged.
static void bn_op_moments(void *invec, void *iovec, int *len, MPI_Datatype *dt) {
	const double *in = invec;
	double *io = iovec;
	int i;
	(void)dt;
	for (i = 0; i < *len; i++, in += 3, io += 3) {
		double na = in[0], nb = io[0], n, d;
		if (na == 0) continue;
		if (nb == 0) {
			io[0] = in[0], io[1] = in[1], io[2] = in[2];
			continue;
		}
		n = na + nb;
		d = io[1] - in[1];
		io[0] = n;
		io[1] = in[1] + d * (nb / n);
		io[2] = in[2] + io[2] + d * d * (na * (nb / n));
	}
}

// bn_init initializes MPI unless it already is (*already = 1), and
// creates the reduction ops. It leaves MPI_COMM_WORLD's error handler as it
// is (the application's, or MPI's default): the helpers set
// MPI_ERRORS_RETURN on their own communicators only.
int bn_init(int *provided, int *already) {
	int rc, flag = 0;
	MPI_Initialized(&flag);
	*already = flag;
	if (flag) {
		rc = MPI_Query_thread(provided);
	} else {
		rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, provided);
	}
	return rc;
}

int bn_create_ops(void) {
	int rc;
	if ((rc = MPI_Op_create(bn_op_sum, 0, &bn_ops[BN_SUM])) != MPI_SUCCESS) return rc;
	if ((rc = MPI_Op_create(bn_op_max, 0, &bn_ops[BN_MAX])) != MPI_SUCCESS) return rc;
	if ((rc = MPI_Op_create(bn_op_min, 0, &bn_ops[BN_MIN])) != MPI_SUCCESS) return rc;
	if ((rc = MPI_Op_create(bn_op_moments, 0, &bn_ops[BN_MOMENTS])) != MPI_SUCCESS) return rc;
	if ((rc = MPI_Type_contiguous(3, MPI_DOUBLE, &bn_triple)) != MPI_SUCCESS) return rc;
	return MPI_Type_commit(&bn_triple);
}

// bn_free_ops frees the ops bn_create_ops made. Operations still pending
// with them (an abandoned MPI_Ireduce) complete normally (MPI_Op_free).
void bn_free_ops(void) {
	int i;
	for (i = BN_SUM; i <= BN_MOMENTS; i++) {
		if (bn_ops[i] != MPI_OP_NULL && bn_ops[i] != 0) MPI_Op_free(&bn_ops[i]);
		bn_ops[i] = MPI_OP_NULL;
	}
	if (bn_triple != MPI_DATATYPE_NULL) MPI_Type_free(&bn_triple);
	bn_triple = MPI_DATATYPE_NULL;
}

int bn_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }

int bn_local_size(bn_comm *c, int *n) {
	MPI_Comm node;
	int rc = MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
	if (rc != MPI_SUCCESS) return rc;
	bn_count(&bn_ncreated, 1);
	MPI_Comm_size(node, n);
	bn_comm_free(&node);
	return MPI_SUCCESS;
}

int bn_finalize(void) { return MPI_Finalize(); }

void bn_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

void bn_error_string(int code, char *buf, int cap) {
	char s[MPI_MAX_ERROR_STRING];
	int n = 0;
	if (MPI_Error_string(code, s, &n) != MPI_SUCCESS) n = 0;
	if (n >= cap) n = cap - 1;
	memcpy(buf, s, n);
	buf[n] = 0;
}

static int bn_post_ctrl(bn_comm *c) {
	return MPI_Irecv(c->ctrlbuf, BN_CTRL_MAX, MPI_BYTE, MPI_ANY_SOURCE, BN_CTRL_TAG, c->ctrl, &c->ctrlreq);
}

// bn_destroy frees c and its communicators. Its control receive must be
// complete or cancelled, and no other request may be pending on c.
static void bn_destroy(bn_comm *c) {
	bn_comm_free(&c->comm);
	bn_comm_free(&c->ctrl);
	pthread_mutex_destroy(&c->ctrlmu);
	free(c->sendreq);
	free(c);
	bn_count(&bn_nstructs, -1);
}

static int bn_wrap(MPI_Comm base, bn_comm **out) {
	int rc, i;
	bn_comm *c = calloc(1, sizeof *c);
	if (!c) return MPI_ERR_NO_MEM;
	bn_count(&bn_nstructs, 1);
	c->comm = MPI_COMM_NULL;
	c->ctrl = MPI_COMM_NULL;
	c->req = MPI_REQUEST_NULL;
	c->ctrlreq = MPI_REQUEST_NULL;
	pthread_mutex_init(&c->ctrlmu, NULL);
	// The duplicate of MPI_COMM_WORLD inherits its error handler (the
	// application's): errors in this MPI_Comm_dup are reported that way.
	if ((rc = MPI_Comm_dup(base, &c->comm)) != MPI_SUCCESS) goto fail;
	bn_count(&bn_ncreated, 1);
	MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
	if ((rc = MPI_Comm_dup(c->comm, &c->ctrl)) != MPI_SUCCESS) goto fail;
	bn_count(&bn_ncreated, 1);
	MPI_Comm_set_errhandler(c->ctrl, MPI_ERRORS_RETURN);
	MPI_Comm_rank(c->comm, &c->rank);
	MPI_Comm_size(c->comm, &c->size);
	if (!(c->sendreq = malloc(c->size * sizeof *c->sendreq))) {
		rc = MPI_ERR_NO_MEM;
		goto fail;
	}
	for (i = 0; i < c->size; i++) c->sendreq[i] = MPI_REQUEST_NULL;
	if ((rc = bn_post_ctrl(c)) != MPI_SUCCESS) goto fail;
	c->nchain = 1;
	c->chain[0] = c;
	*out = c;
	return MPI_SUCCESS;
fail:
	bn_destroy(c);
	return rc;
}

// bn_cancel_ctrl cancels c's control receive (MPI_Cancel of a receive is
// local): afterwards no control message is taken on c.
void bn_cancel_ctrl(bn_comm *c) {
	pthread_mutex_lock(&c->ctrlmu);
	if (c->ctrlreq != MPI_REQUEST_NULL) {
		MPI_Cancel(&c->ctrlreq);
		MPI_Wait(&c->ctrlreq, MPI_STATUS_IGNORE);
	}
	c->dead = 1;
	pthread_mutex_unlock(&c->ctrlmu);
}

int bn_release(bn_comm *c) {
	int flag = 0;
	if (c->req != MPI_REQUEST_NULL) {
		if (MPI_Test(&c->req, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag) return 0;
	}
	flag = 0;
	if (MPI_Testall(c->size, c->sendreq, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS || !flag) return 0;
	bn_cancel_ctrl(c);
	bn_destroy(c);
	return 1;
}

void bn_drop(bn_comm *c) {
	bn_cancel_ctrl(c);
	bn_destroy(c);
}

int bn_world(bn_comm **out) { return bn_wrap(MPI_COMM_WORLD, out); }

int bn_split(bn_comm *c, int color, int key, bn_comm **out) {
	MPI_Comm nc;
	int rc = MPI_Comm_split(c->comm, color < 0 ? MPI_UNDEFINED : color, key, &nc);
	*out = NULL;
	if (rc != MPI_SUCCESS) return rc;
	if (nc == MPI_COMM_NULL) return MPI_SUCCESS;
	bn_count(&bn_ncreated, 1);
	MPI_Comm_set_errhandler(nc, MPI_ERRORS_RETURN);
	rc = bn_wrap(nc, out);
	bn_comm_free(&nc); // the wrapper holds duplicates
	return rc;
}

void bn_set_chain(bn_comm *c, bn_comm *parent) {
	int i;
	c->nchain = 1;
	c->chain[0] = c;
	for (i = 0; parent && i < parent->nchain && c->nchain < BN_MAX_CHAIN; i++) {
		c->chain[c->nchain++] = parent->chain[i];
	}
}

int bn_rank(bn_comm *c) { return c->rank; }
int bn_size(bn_comm *c) { return c->size; }

int bn_iallgather(bn_comm *c, const void *send, int count, void *recv, int dt) {
	MPI_Datatype t = bn_type(dt);
	return MPI_Iallgather(send, count, t, recv, count, t, c->comm, &c->req);
}

int bn_iallgather_inplace(bn_comm *c, void *recv, int count, int dt) {
	MPI_Datatype t = bn_type(dt);
	return MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, count, t, c->comm, &c->req);
}

int bn_iallgatherv(bn_comm *c, const void *send, int count, void *recv, const int *counts, const int *displs, int dt) {
	MPI_Datatype t = bn_type(dt);
	return MPI_Iallgatherv(send, count, t, recv, counts, displs, t, c->comm, &c->req);
}

int bn_ireduce(bn_comm *c, void *buf, int count, int dt, int op, int root) {
	MPI_Datatype t = bn_type(dt);
	if (op < BN_SUM || op > BN_MOMENTS) return MPI_ERR_OP;
	if (op == BN_MOMENTS) {
		if (dt != BN_F64 || count % 3 != 0) return MPI_ERR_TYPE;
		t = bn_triple, count /= 3;
	}
	if (c->rank == root) {
		return MPI_Ireduce(MPI_IN_PLACE, buf, count, t, bn_ops[op], root, c->comm, &c->req);
	}
	return MPI_Ireduce(buf, NULL, count, t, bn_ops[op], root, c->comm, &c->req);
}

int bn_iallreduce(bn_comm *c, void *buf, int count, int dt, int op) {
	MPI_Datatype t = bn_type(dt);
	if (op < BN_SUM || op > BN_MOMENTS) return MPI_ERR_OP;
	if (op == BN_MOMENTS) {
		if (dt != BN_F64 || count % 3 != 0) return MPI_ERR_TYPE;
		t = bn_triple, count /= 3;
	}
	return MPI_Iallreduce(MPI_IN_PLACE, buf, count, t, bn_ops[op], c->comm, &c->req);
}

int bn_ibcast(bn_comm *c, void *buf, int count, int dt, int root) {
	return MPI_Ibcast(buf, count, bn_type(dt), root, c->comm, &c->req);
}

int bn_ialltoallv(bn_comm *c, const void *send, const int *scounts, const int *sdispls,
                  void *recv, const int *rcounts, const int *rdispls, int dt) {
	MPI_Datatype t = bn_type(dt);
	return MPI_Ialltoallv(send, scounts, sdispls, t, recv, rcounts, rdispls, t, c->comm, &c->req);
}

int bn_iallreduce_max_int(bn_comm *c, int *buf) {
	return MPI_Iallreduce(MPI_IN_PLACE, buf, 1, MPI_INT, MPI_MAX, c->comm, &c->req);
}

int bn_active(bn_comm *c) { return c->req != MPI_REQUEST_NULL; }

int bn_check_ctrl(bn_comm *c) {
	int rc = MPI_SUCCESS, i, flag;
	for (i = 0; i < c->nchain; i++) {
		bn_comm *a = c->chain[i];
		flag = 0;
		pthread_mutex_lock(&a->ctrlmu);
		if (a->dead) {
			flag = 0;
		} else if (a->ctrlreq == MPI_REQUEST_NULL) {
			flag = 1; // arrived earlier, not yet taken
		} else {
			rc = MPI_Test(&a->ctrlreq, &flag, MPI_STATUS_IGNORE);
		}
		pthread_mutex_unlock(&a->ctrlmu);
		if (rc != MPI_SUCCESS) return -rc;
		if (flag) return (i + 1) << 8;
	}
	return 0;
}

int bn_poll(bn_comm *c, int skip_ctrl, int yield) {
	int rc, flag = 0;
	if (c->req != MPI_REQUEST_NULL && (rc = MPI_Test(&c->req, &flag, MPI_STATUS_IGNORE)) != MPI_SUCCESS) {
		return -rc;
	}
	if (c->req == MPI_REQUEST_NULL) return 1;
	if (!skip_ctrl && (rc = bn_check_ctrl(c)) != 0) return rc;
	if (yield) sched_yield();
	return 0;
}

int bn_ctrl_take(bn_comm *c, void *msg, int *ok) {
	int rc = MPI_SUCCESS, flag = 1;
	*ok = 0;
	pthread_mutex_lock(&c->ctrlmu);
	if (c->dead) {
		flag = 0;
	} else if (c->ctrlreq != MPI_REQUEST_NULL) {
		rc = MPI_Test(&c->ctrlreq, &flag, MPI_STATUS_IGNORE);
	}
	if (rc == MPI_SUCCESS && flag) {
		memcpy(msg, c->ctrlbuf, BN_CTRL_MAX);
		*ok = 1;
		rc = bn_post_ctrl(c);
	}
	pthread_mutex_unlock(&c->ctrlmu);
	return rc;
}

// The requests are kept (not MPI_Request_free'd) so that bn_release knows
// when sendbuf is no longer MPI's. The Go side calls bn_notify at most
// once per communicator; a second call would lose the first requests.
int bn_notify(bn_comm *c, const void *msg, int len) {
	int r, rc;
	if (len > BN_CTRL_MAX) len = BN_CTRL_MAX;
	memcpy(c->sendbuf, msg, len);
	for (r = 0; r < c->size; r++) {
		if (r == c->rank) continue;
		if (c->sendreq[r] != MPI_REQUEST_NULL) MPI_Request_free(&c->sendreq[r]);
		if ((rc = MPI_Isend(c->sendbuf, len, MPI_BYTE, r, BN_CTRL_TAG, c->ctrl, &c->sendreq[r])) != MPI_SUCCESS) return rc;
	}
	return MPI_SUCCESS;
}

// ---- for the tests ----

int bn_world_errhandler_is_fatal(void) {
	MPI_Errhandler eh;
	if (MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh) != MPI_SUCCESS) return -1;
	return eh == MPI_ERRORS_ARE_FATAL;
}

int bn_errhandler_returns(bn_comm *c) {
	MPI_Errhandler a, b;
	if (MPI_Comm_get_errhandler(c->comm, &a) != MPI_SUCCESS) return -1;
	if (MPI_Comm_get_errhandler(c->ctrl, &b) != MPI_SUCCESS) return -1;
	return a == MPI_ERRORS_RETURN && b == MPI_ERRORS_RETURN;
}

int bn_app_init(int *provided) { return MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, provided); }

void bn_state(int *initialized, int *finalized) {
	MPI_Initialized(initialized);
	MPI_Finalized(finalized);
}
