//go:build mpi

package mpi

/*
#include "bn_mpi.h"
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/proto"
)

// This file holds hooks that only the package's tests use (through
// export_test.go); nothing else calls them.

// rawAllGather is AllGather without the header exchange: the bare
// MPI_Iallgather of the data through the staging buffers, polled as every
// call is. The benchmarks use it to measure what the header round trip
// costs. Every rank must pass the same lengths (nothing checks them).
func rawAllGather(ctx context.Context, cc collective.Communicator, send, recv []float64) error {
	c := cc.(*comm)
	k := proto.AllGather
	if !c.busy.CompareAndSwap(false, true) {
		return fmt.Errorf("rawAllGather: concurrent call")
	}
	defer c.end()
	if err := c.failure(k); err != nil {
		return err
	}
	sb, rb := collective.Float64s(send), collective.Float64s(recv)
	sp, rp := c.staging(0, bytesOf(sb)), c.staging(1, bytesOf(rb))
	toC(sp, sb)
	if !live() {
		return c.errorf(k, errFinalized)
	}
	rc := C.bn_iallgather(c.h, sp, C.int(len(send)), rp, C.BN_F64)
	unlive()
	if err := c.post(ctx, k, "MPI_Iallgather", rc); err != nil {
		return err
	}
	fromC(rb, rp)
	return nil
}

// resources is what the backend holds: live C wrappers of communicators
// (bn_comm), MPI communicator handles created and freed, live C buffers.
type resources struct {
	Structs, Created, Freed, CAllocs int64
}

func currentResources() resources {
	var s, cr, fr C.long
	C.bn_counters(&s, &cr, &fr)
	return resources{Structs: int64(s), Created: int64(cr), Freed: int64(fr), CAllocs: cAllocs.Load()}
}

// worldErrhandlerIsFatal reports whether MPI_COMM_WORLD's error handler is
// MPI_ERRORS_ARE_FATAL (1), something else (0), or -1 on an error.
func worldErrhandlerIsFatal() int { return int(C.bn_world_errhandler_is_fatal()) }

// errhandlerReturns reports whether both MPI communicators of c use
// MPI_ERRORS_RETURN (1), not (0), or -1 on an error.
func errhandlerReturns(cc collective.Communicator) int {
	return int(C.bn_errhandler_returns(cc.(*comm).h))
}

// mpiState reports MPI_Initialized and MPI_Finalized.
func mpiState() (initialized, finalized bool) {
	var i, f C.int
	C.bn_state(&i, &f)
	return i != 0, f != 0
}

// appInit initializes MPI as an application would, before Init, on an OS
// thread of its own; the returned function finalizes it on that thread.
func appInit() (finalize func() error, err error) {
	start, fin := make(chan error), make(chan chan error)
	go func() {
		runtime.LockOSThread()
		var provided C.int
		if rc := C.bn_app_init(&provided); rc != 0 {
			start <- newMPIError("MPI_Init_thread", rc)
			return
		}
		start <- nil
		reply := <-fin
		if rc := C.bn_finalize(); rc != 0 {
			reply <- newMPIError("MPI_Finalize", rc)
			return
		}
		reply <- nil
	}()
	if err := <-start; err != nil {
		return nil, err
	}
	return func() error {
		reply := make(chan error)
		fin <- reply
		return <-reply
	}, nil
}

// lastFused reports whether the last call on cc moved its data with the
// header exchange, and the slot size (payload bytes per rank) of the next
// call.
func lastFused(cc collective.Communicator) (fused bool, nextSlot int) {
	c := cc.(*comm)
	return c.fused, c.slot
}
