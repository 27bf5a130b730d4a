//go:build cuda

package nccl

// The NCCL entry points, resolved at run time with dlopen/dlsym: no nccl.h
// and no libnccl are needed to build. The prototypes below are those of
// nccl.h (NCCL 2.x); handles are opaque pointers, enums are ints, and
// ncclUniqueId is its 128-byte struct (passed by value to ncclCommInitRank).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>

typedef struct { char internal[128]; } bnUniqueId;
typedef void *bnComm;
typedef void *bnStream;

static void *bn_h;
static int (*p_GetVersion)(int *);
static int (*p_GetUniqueId)(bnUniqueId *);
static int (*p_CommInitRank)(bnComm *, int, bnUniqueId, int);
static int (*p_CommInitAll)(bnComm *, int, const int *);
static int (*p_CommDestroy)(bnComm);
static int (*p_CommAbort)(bnComm);
static int (*p_CommGetAsyncError)(bnComm, int *);
static int (*p_CommCount)(const bnComm, int *);
static int (*p_CommCuDevice)(const bnComm, int *);
static int (*p_CommUserRank)(const bnComm, int *);
static const char *(*p_GetErrorString)(int);
static const char *(*p_GetLastError)(bnComm);
static int (*p_AllReduce)(const void *, void *, size_t, int, int, bnComm, bnStream);
static int (*p_Broadcast)(const void *, void *, size_t, int, int, bnComm, bnStream);
static int (*p_AllGather)(const void *, void *, size_t, int, bnComm, bnStream);
static int (*p_Send)(const void *, size_t, int, int, bnComm, bnStream);
static int (*p_Recv)(void *, size_t, int, int, bnComm, bnStream);
static int (*p_GroupStart)(void);
static int (*p_GroupEnd)(void);
static int (*p_CommSplit)(bnComm, int, int, bnComm *, void *);

// bn_load opens the library at path and resolves the entry points; on
// failure it writes a message to err and returns non-zero.
static int bn_load(const char *path, char *err, size_t errlen) {
	bn_h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!bn_h) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return 1;
	}
#define REQ(name, sym) \
	if (!(*(void **)(&name) = dlsym(bn_h, sym))) { snprintf(err, errlen, "%s: symbol %s not found", path, sym); return 2; }
#define OPT(name, sym) *(void **)(&name) = dlsym(bn_h, sym);
	REQ(p_GetVersion, "ncclGetVersion")
	REQ(p_GetUniqueId, "ncclGetUniqueId")
	REQ(p_CommInitRank, "ncclCommInitRank")
	REQ(p_CommInitAll, "ncclCommInitAll")
	REQ(p_CommDestroy, "ncclCommDestroy")
	REQ(p_CommAbort, "ncclCommAbort")
	REQ(p_CommGetAsyncError, "ncclCommGetAsyncError")
	REQ(p_CommCount, "ncclCommCount")
	REQ(p_CommCuDevice, "ncclCommCuDevice")
	REQ(p_CommUserRank, "ncclCommUserRank")
	REQ(p_GetErrorString, "ncclGetErrorString")
	REQ(p_AllReduce, "ncclAllReduce")
	REQ(p_Broadcast, "ncclBroadcast")
	REQ(p_AllGather, "ncclAllGather")
	REQ(p_Send, "ncclSend")
	REQ(p_Recv, "ncclRecv")
	REQ(p_GroupStart, "ncclGroupStart")
	REQ(p_GroupEnd, "ncclGroupEnd")
	OPT(p_GetLastError, "ncclGetLastError")
	OPT(p_CommSplit, "ncclCommSplit")
#undef REQ
#undef OPT
	return 0;
}

static int bn_has_split(void) { return p_CommSplit != NULL; }
static int bn_GetVersion(int *v) { return p_GetVersion(v); }
static int bn_GetUniqueId(bnUniqueId *id) { return p_GetUniqueId(id); }
static int bn_CommInitRank(bnComm *c, int n, bnUniqueId *id, int r) { return p_CommInitRank(c, n, *id, r); }
static int bn_CommInitAll(bnComm *c, int n, const int *devs) { return p_CommInitAll(c, n, devs); }
static int bn_CommDestroy(bnComm c) { return p_CommDestroy(c); }
static int bn_CommAbort(bnComm c) { return p_CommAbort(c); }
static int bn_CommGetAsyncError(bnComm c, int *e) { return p_CommGetAsyncError(c, e); }
static int bn_CommCount(bnComm c, int *n) { return p_CommCount(c, n); }
static int bn_CommCuDevice(bnComm c, int *d) { return p_CommCuDevice(c, d); }
static int bn_CommUserRank(bnComm c, int *r) { return p_CommUserRank(c, r); }
static const char *bn_GetErrorString(int r) { return p_GetErrorString(r); }
static const char *bn_GetLastError(bnComm c) { return p_GetLastError ? p_GetLastError(c) : NULL; }
static int bn_AllReduce(uintptr_t s, uintptr_t r, size_t n, int dt, int op, bnComm c, bnStream st) {
	return p_AllReduce((const void *)s, (void *)r, n, dt, op, c, st);
}
static int bn_Broadcast(uintptr_t s, uintptr_t r, size_t n, int dt, int root, bnComm c, bnStream st) {
	return p_Broadcast((const void *)s, (void *)r, n, dt, root, c, st);
}
static int bn_AllGather(uintptr_t s, uintptr_t r, size_t n, int dt, bnComm c, bnStream st) {
	return p_AllGather((const void *)s, (void *)r, n, dt, c, st);
}
static int bn_Send(uintptr_t s, size_t n, int dt, int peer, bnComm c, bnStream st) {
	return p_Send((const void *)s, n, dt, peer, c, st);
}
static int bn_Recv(uintptr_t r, size_t n, int dt, int peer, bnComm c, bnStream st) {
	return p_Recv((void *)r, n, dt, peer, c, st);
}
static int bn_GroupStart(void) { return p_GroupStart(); }
static int bn_GroupEnd(void) { return p_GroupEnd(); }
static int bn_CommSplit(bnComm c, int color, int key, bnComm *out) { return p_CommSplit(c, color, key, out, NULL); }
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"github.com/gorgonia-bn/bn/collective"
)

// ncclResult_t values used here.
const (
	ncclSuccess         = 0
	ncclInvalidArgument = 4
	ncclInvalidUsage    = 5
	ncclInProgress      = 7
)

// ncclDataType_t and ncclRedOp_t values.
const (
	ncclFloat32 = 7
	ncclFloat64 = 8
	ncclSum     = 0
	ncclMax     = 2
	ncclMin     = 3
	noColor     = -1 // NCCL_SPLIT_NOCOLOR
)

var lib struct {
	once sync.Once
	err  error
	path string
}

// load opens libnccl once per process.
func load() error {
	lib.once.Do(func() {
		lib.path = os.Getenv(LibraryEnv)
		if lib.path == "" {
			lib.path = DefaultLibrary
		}
		cpath := C.CString(lib.path)
		defer C.free(unsafe.Pointer(cpath))
		var msg [512]C.char
		if C.bn_load(cpath, &msg[0], C.size_t(len(msg))) != 0 {
			lib.err = fmt.Errorf("%w: %w: %s (set %s to the path of libnccl.so.2)",
				collective.ErrNotBuilt, ErrLibrary, C.GoString(&msg[0]), LibraryEnv)
		}
	})
	return lib.err
}

// Available reports whether the NCCL library can be loaded (nil) or why
// not (an error wrapping ErrLibrary and collective.ErrNotBuilt).
func Available() error { return load() }

// Version returns NCCL's version code (e.g. 22703 for 2.27.3).
func Version() (int, error) {
	if err := load(); err != nil {
		return 0, err
	}
	var v C.int
	if r := C.bn_GetVersion(&v); r != ncclSuccess {
		return 0, ncclError("ncclGetVersion", r, nil)
	}
	return int(v), nil
}

// ncclError describes a failed NCCL call. Invalid arguments or usage wrap
// collective.ErrMismatch; everything else ErrNCCL.
func ncclError(what string, r C.int, comm C.bnComm) error {
	msg := C.GoString(C.bn_GetErrorString(r))
	if comm != nil {
		if last := C.bn_GetLastError(comm); last != nil && C.GoString(last) != "" {
			msg += ": " + C.GoString(last)
		}
	}
	kind := ErrNCCL
	if r == ncclInvalidArgument || r == ncclInvalidUsage {
		kind = collective.ErrMismatch
	}
	return fmt.Errorf("%w: %s: %s (ncclResult %d)", kind, what, msg, int(r))
}

// ErrNCCL wraps the failures NCCL reports (system, internal, remote
// errors). A collective that fails with it leaves the group aborted.
var ErrNCCL = errors.New("nccl error")

// NewUniqueID returns a new NCCL unique id: rank 0 of a new communicator
// creates it and every rank passes it to NewRank.
func NewUniqueID() (UniqueID, error) {
	var id UniqueID
	if err := load(); err != nil {
		return id, err
	}
	var cid C.bnUniqueId
	if r := C.bn_GetUniqueId(&cid); r != ncclSuccess {
		return id, ncclError("ncclGetUniqueId", r, nil)
	}
	copy(id[:], unsafe.Slice((*byte)(unsafe.Pointer(&cid.internal[0])), len(id)))
	return id, nil
}

func (id UniqueID) c() C.bnUniqueId {
	var cid C.bnUniqueId
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&cid.internal[0])), len(id)), id[:])
	return cid
}

// Go wrappers. Communicator handles and streams are opaque C pointers;
// buffer addresses travel as uintptr_t.

func commInitRank(id UniqueID, size, rank int) (unsafe.Pointer, error) {
	var h C.bnComm
	cid := id.c()
	if r := C.bn_CommInitRank(&h, C.int(size), &cid, C.int(rank)); r != ncclSuccess {
		return nil, ncclError("ncclCommInitRank", r, nil)
	}
	return unsafe.Pointer(h), nil
}

func commInitAll(devices []int) ([]unsafe.Pointer, error) {
	n := len(devices)
	if n == 0 {
		return nil, nil
	}
	p := (*C.bnComm)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.bnComm(nil)))))
	defer C.free(unsafe.Pointer(p))
	hs := unsafe.Slice(p, n)
	devs := make([]C.int, n)
	for i, d := range devices {
		devs[i] = C.int(d)
	}
	if r := C.bn_CommInitAll(p, C.int(n), &devs[0]); r != ncclSuccess {
		return nil, ncclError("ncclCommInitAll", r, nil)
	}
	out := make([]unsafe.Pointer, n)
	for i := range out {
		out[i] = unsafe.Pointer(hs[i])
	}
	return out, nil
}

func commDestroy(h unsafe.Pointer) error {
	if r := C.bn_CommDestroy(C.bnComm(h)); r != ncclSuccess {
		return ncclError("ncclCommDestroy", r, nil)
	}
	return nil
}

func commAbort(h unsafe.Pointer) error {
	if r := C.bn_CommAbort(C.bnComm(h)); r != ncclSuccess {
		return ncclError("ncclCommAbort", r, nil)
	}
	return nil
}

// commAsyncError returns the communicator's asynchronous error, if any
// (ncclInProgress counts as none).
func commAsyncError(h unsafe.Pointer) error {
	var e C.int
	if r := C.bn_CommGetAsyncError(C.bnComm(h), &e); r != ncclSuccess {
		return ncclError("ncclCommGetAsyncError", r, C.bnComm(h))
	}
	if e != ncclSuccess && e != ncclInProgress {
		return ncclError("asynchronous error", e, C.bnComm(h))
	}
	return nil
}

func commInfo(h unsafe.Pointer) (rank, size, device int, err error) {
	var r, n, d C.int
	if res := C.bn_CommUserRank(C.bnComm(h), &r); res != ncclSuccess {
		return 0, 0, 0, ncclError("ncclCommUserRank", res, nil)
	}
	if res := C.bn_CommCount(C.bnComm(h), &n); res != ncclSuccess {
		return 0, 0, 0, ncclError("ncclCommCount", res, nil)
	}
	if res := C.bn_CommCuDevice(C.bnComm(h), &d); res != ncclSuccess {
		return 0, 0, 0, ncclError("ncclCommCuDevice", res, nil)
	}
	return int(r), int(n), int(d), nil
}

func allReduce(send, recv uintptr, n int, dt, op int, h, s unsafe.Pointer) error {
	if r := C.bn_AllReduce(C.uintptr_t(send), C.uintptr_t(recv), C.size_t(n), C.int(dt), C.int(op), C.bnComm(h), C.bnStream(s)); r != ncclSuccess {
		return ncclError("ncclAllReduce", r, C.bnComm(h))
	}
	return nil
}

func broadcast(send, recv uintptr, n int, dt, root int, h, s unsafe.Pointer) error {
	if r := C.bn_Broadcast(C.uintptr_t(send), C.uintptr_t(recv), C.size_t(n), C.int(dt), C.int(root), C.bnComm(h), C.bnStream(s)); r != ncclSuccess {
		return ncclError("ncclBroadcast", r, C.bnComm(h))
	}
	return nil
}

func allGather(send, recv uintptr, n int, dt int, h, s unsafe.Pointer) error {
	if r := C.bn_AllGather(C.uintptr_t(send), C.uintptr_t(recv), C.size_t(n), C.int(dt), C.bnComm(h), C.bnStream(s)); r != ncclSuccess {
		return ncclError("ncclAllGather", r, C.bnComm(h))
	}
	return nil
}

func sendTo(buf uintptr, n int, dt, peer int, h, s unsafe.Pointer) error {
	if r := C.bn_Send(C.uintptr_t(buf), C.size_t(n), C.int(dt), C.int(peer), C.bnComm(h), C.bnStream(s)); r != ncclSuccess {
		return ncclError("ncclSend", r, C.bnComm(h))
	}
	return nil
}

func recvFrom(buf uintptr, n int, dt, peer int, h, s unsafe.Pointer) error {
	if r := C.bn_Recv(C.uintptr_t(buf), C.size_t(n), C.int(dt), C.int(peer), C.bnComm(h), C.bnStream(s)); r != ncclSuccess {
		return ncclError("ncclRecv", r, C.bnComm(h))
	}
	return nil
}

func groupStart() error {
	if r := C.bn_GroupStart(); r != ncclSuccess {
		return ncclError("ncclGroupStart", r, nil)
	}
	return nil
}

func groupEnd(h unsafe.Pointer) error {
	if r := C.bn_GroupEnd(); r != ncclSuccess {
		return ncclError("ncclGroupEnd", r, C.bnComm(h))
	}
	return nil
}

func hasSplit() bool { return C.bn_has_split() != 0 }

func commSplit(h unsafe.Pointer, color, key int) (unsafe.Pointer, error) {
	var out C.bnComm
	if r := C.bn_CommSplit(C.bnComm(h), C.int(color), C.int(key), &out); r != ncclSuccess {
		return nil, ncclError("ncclCommSplit", r, C.bnComm(h))
	}
	return unsafe.Pointer(out), nil
}
