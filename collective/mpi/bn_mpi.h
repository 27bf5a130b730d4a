// C helpers of package mpi. They keep every MPI handle (pointers in Open
// MPI, integers in MPICH) inside C, behind the opaque bn_comm, so that the
// Go code compiles unchanged against either implementation.

#ifndef BN_MPI_H
#define BN_MPI_H

#include <stdint.h>

enum { BN_F32 = 1, BN_F64 = 2, BN_I64 = 3, BN_INT = 4 };
enum { BN_SUM = 1, BN_MAX = 2, BN_MIN = 3, BN_MOMENTS = 4 };
enum { BN_CTRL_MAX = 512, BN_MAX_CHAIN = 8 };

// bn_comm wraps one communicator: a duplicate of it for the collectives,
// and a second duplicate for control messages (abort, leave), on which a
// receive is always posted.
typedef struct bn_comm bn_comm;

// bn_init initializes MPI (MPI_THREAD_MULTIPLE) unless it already is
// (*already = 1); it does not touch MPI_COMM_WORLD's error handler.
int bn_init(int *provided, int *already);
// bn_create_ops creates the reduction ops; bn_free_ops frees them.
int bn_create_ops(void);
void bn_free_ops(void);
int bn_finalize(void);
void bn_abort(int code);
void bn_error_string(int code, char *buf, int cap);
int bn_thread_multiple(void);
// bn_local_size sets *n to the number of ranks on this node (collective
// over c).
int bn_local_size(bn_comm *c, int *n);

// bn_world makes the wrapper of a duplicate of MPI_COMM_WORLD.
int bn_world(bn_comm **out);
// bn_split is MPI_Comm_split (color < 0: MPI_UNDEFINED, *out = NULL).
int bn_split(bn_comm *c, int color, int key, bn_comm **out);
int bn_rank(bn_comm *c);
int bn_size(bn_comm *c);
// bn_chain sets the communicators whose control receives bn_poll tests:
// c itself and its ancestors.
void bn_set_chain(bn_comm *c, bn_comm *parent);

// Nonblocking collectives on c's current request. dt is a BN_ type.
int bn_iallgather(bn_comm *c, const void *send, int count, void *recv, int dt);
int bn_iallgather_inplace(bn_comm *c, void *recv, int count, int dt);
int bn_iallgatherv(bn_comm *c, const void *send, int count, void *recv, const int *counts, const int *displs, int dt);
int bn_ireduce(bn_comm *c, void *buf, int count, int dt, int op, int root);
int bn_ibcast(bn_comm *c, void *buf, int count, int dt, int root);
int bn_ialltoallv(bn_comm *c, const void *send, const int *scounts, const int *sdispls,
                  void *recv, const int *rcounts, const int *rdispls, int dt);
int bn_iallreduce_max_int(bn_comm *c, int *buf);
int bn_iallreduce(bn_comm *c, void *buf, int count, int dt, int op);

// bn_poll tests c's current request and, unless skip_ctrl, the control
// receives of c's chain. It returns -rc on an MPI error, 1 if the request
// is complete, (i+1) << 8 if a control message arrived on chain[i], and 0
// otherwise, after sched_yield if yield.
int bn_poll(bn_comm *c, int skip_ctrl, int yield);
// bn_check_ctrl tests the control receives of c's chain: -rc, 0, or
// (i+1) << 8 as bn_poll.
int bn_check_ctrl(bn_comm *c);
// bn_ctrl_take copies the control message that arrived on c, if any
// (*ok = 1; msg must hold BN_CTRL_MAX bytes), and posts the next receive.
int bn_ctrl_take(bn_comm *c, void *msg, int *ok);
// bn_notify sends msg on c's control communicator to every other rank.
int bn_notify(bn_comm *c, const void *msg, int len);
// bn_active reports whether c's current request is still pending.
int bn_active(bn_comm *c);

// bn_release frees c (the struct and its two communicators, with
// MPI_Comm_free) and returns 1, unless a request of c is still pending
// (its collective request, or a control message it sent): then it returns
// 0 and frees nothing. The caller must know that no more messages will
// arrive on c (see release in comm.go).
int bn_release(bn_comm *c);
// bn_drop frees c, on which nothing was ever sent (a failed Init).
void bn_drop(bn_comm *c);
// bn_cancel_ctrl cancels c's control receive, for good.
void bn_cancel_ctrl(bn_comm *c);
// bn_counters reports the live bn_comm structs and the MPI communicator
// handles created and freed so far (for the tests).
void bn_counters(long *structs, long *created, long *freed);

// For the tests: MPI_COMM_WORLD's error handler is MPI_ERRORS_ARE_FATAL
// (1, else 0, -1 on error); c's communicators return errors; an
// application's own MPI_Init_thread; MPI_Initialized and MPI_Finalized.
int bn_world_errhandler_is_fatal(void);
int bn_errhandler_returns(bn_comm *c);
int bn_app_init(int *provided);
void bn_state(int *initialized, int *finalized);

#endif
