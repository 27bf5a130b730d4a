//go:build cuda

package nccl

// These tests need a GPU and libnccl.so.2 (set BN_NCCL_LIB): build them
// with `go test -c -tags cuda` and run the binary on a GPU machine. Only
// single-GPU machines are lent to this project, so most run on a 1-rank
// communicator; the in-process tests use every visible GPU.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/conformance"
	"gorgonia.org/cu"
)

func needNCCL(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("NCCL not available: %v", err)
	}
}

func devices(t *testing.T) []int {
	t.Helper()
	n, err := cu.NumDevices()
	if err != nil || n == 0 {
		t.Fatalf("CUDA devices: %d, %v", n, err)
	}
	devs := make([]int, n)
	for i := range devs {
		devs[i] = i
	}
	return devs
}

// ncclHarness runs every rank of a fresh NewInProcess group (one per GPU)
// as a goroutine.
type ncclHarness struct{ devs []int }

func (h ncclHarness) Size() int { return len(h.devs) }

func (h ncclHarness) Run(t *testing.T, f func(ctx context.Context, c collective.Communicator) error) {
	t.Helper()
	comms, err := NewInProcess(h.devs)
	if err != nil {
		t.Fatal(err)
	}
	conformance.RunRanks(t, comms, f)
}

// TestConformance runs the backend-agnostic suite (host buffers, staged
// through device memory) on all visible GPUs.
func TestConformance(t *testing.T) {
	needNCCL(t)
	v, _ := Version()
	t.Logf("NCCL %d, %d GPU(s)", v, len(devices(t)))
	h := ncclHarness{devices(t)}
	o := conformance.Options{SameProcess: true, MomentsTree: true, Slack: 2 * time.Second}
	if testing.Short() {
		o.Large = 1 << 14
	}
	for _, c := range conformance.Cases(o) {
		t.Run(c.Name, func(t *testing.T) {
			if h.Size() < c.MinSize {
				t.Skipf("needs %d ranks, have %d", c.MinSize, h.Size())
			}
			if h.Size() > 1 && strings.HasPrefix(c.Name, "AllReduceNaN") {
				// NCCL's Max and Min are fmax and fmin: a NaN operand is
				// dropped and the sign of a zero is unspecified, unlike Go's
				// max and min that the suite expects.
				t.Skip("NCCL's MAX/MIN do not follow Go's NaN and signed-zero rules")
			}
			h.Run(t, c.F)
		})
	}
}

// onDevice runs f with the primary context of device 0 current on a locked
// thread.
func onDevice(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev, err := cu.GetDevice(0)
	if err != nil {
		t.Fatal(err)
	}
	pctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.ReleasePrimaryCtx()
	if err := cu.PushCurrentCtx(pctx); err != nil {
		t.Fatal(err)
	}
	defer cu.PopCurrentCtx()
	f()
}

func devUpload(t *testing.T, xs []float32) cu.DevicePtr {
	t.Helper()
	p, err := cu.MemAlloc(int64(4 * max(len(xs), 1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { onDevice(t, func() { cu.MemFree(p) }) })
	if len(xs) > 0 {
		if err := cu.MemcpyHtoD(p, unsafe.Pointer(&xs[0]), int64(4*len(xs))); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func devDownload(t *testing.T, p cu.DevicePtr, n int) []float32 {
	t.Helper()
	out := make([]float32, n)
	if err := cu.Synchronize(); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		if err := cu.MemcpyDtoH(unsafe.Pointer(&out[0]), p, int64(4*n)); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestDeviceBuffers: 1-rank collectives on device memory, checked and
// unchecked, blocking and stream-ordered.
func TestDeviceBuffers(t *testing.T) {
	needNCCL(t)
	for _, opts := range [][]Option{nil, {Unchecked()}} {
		t.Run(fmt.Sprintf("unchecked=%v", len(opts) > 0), func(t *testing.T) {
			id, err := NewUniqueID()
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewRank(id, 1, 0, 0, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			}()
			ctx := context.Background()
			onDevice(t, func() {
				x := []float32{1, -2, 3, 4.5}
				dx := devUpload(t, x)
				buf := collective.Device(uintptr(dx), len(x), collective.Float32)
				for _, op := range []collective.ReduceOp{collective.Sum, collective.Max, collective.Min} {
					if err := c.AllReduce(ctx, buf, op); err != nil {
						t.Fatal(err)
					}
				}
				if got := devDownload(t, dx, len(x)); fmt.Sprint(got) != fmt.Sprint(x) {
					t.Errorf("1-rank all-reduce changed %v into %v", x, got)
				}
				recv := devUpload(t, make([]float32, len(x)))
				if err := c.AllGather(ctx, buf, collective.Device(uintptr(recv), len(x), collective.Float32), nil); err != nil {
					t.Fatal(err)
				}
				if got := devDownload(t, recv, len(x)); fmt.Sprint(got) != fmt.Sprint(x) {
					t.Errorf("all-gather: %v, want %v", got, x)
				}
				recv2 := devUpload(t, make([]float32, len(x)))
				if err := c.AllToAll(ctx, buf, []int{len(x)}, collective.Device(uintptr(recv2), len(x), collective.Float32), []int{len(x)}); err != nil {
					t.Fatal(err)
				}
				if got := devDownload(t, recv2, len(x)); fmt.Sprint(got) != fmt.Sprint(x) {
					t.Errorf("all-to-all: %v, want %v", got, x)
				}
				if err := c.Broadcast(ctx, buf, 0); err != nil {
					t.Fatal(err)
				}
				// Stream-ordered view on a stream of our own.
				s, err := cu.MakeStream(cu.NonBlocking)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Destroy()
				v := c.WithStream(s)
				if err := v.AllReduce(ctx, buf, collective.Sum); err != nil {
					t.Fatal(err)
				}
				if err := v.AllReduce(ctx, collective.Float32s(x), collective.Sum); !errors.Is(err, collective.ErrMismatch) {
					t.Errorf("host buffer on a stream-ordered view: %v, want ErrMismatch", err)
				}
				if err := s.Synchronize(); err != nil {
					t.Fatal(err)
				}
				if err := c.Barrier(ctx); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestNew: the unique id through a (1-rank, in-process) boot communicator,
// and through a file.
func TestNew(t *testing.T) {
	needNCCL(t)
	ctx := context.Background()
	err := collective.Run(ctx, 1, func(ctx context.Context, boot collective.Communicator) error {
		c, err := New(ctx, boot, 0)
		if err != nil {
			return err
		}
		defer c.Close()
		if c.Rank() != 0 || c.Size() != 1 || c.Device() != 0 {
			return fmt.Errorf("rank %d size %d device %d", c.Rank(), c.Size(), c.Device())
		}
		return c.Barrier(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewFromFile(ctx, filepath.Join(t.TempDir(), "nccl-id"), 1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Barrier(ctx); err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := c.Barrier(ctx); !errors.Is(err, collective.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// TestLibraryMissing runs this binary again with BN_NCCL_LIB pointing
// nowhere: every constructor must fail with ErrLibrary and ErrNotBuilt.
func TestLibraryMissing(t *testing.T) {
	if os.Getenv("BN_NCCL_CHILD") == "1" {
		err := Available()
		if !errors.Is(err, ErrLibrary) || !errors.Is(err, collective.ErrNotBuilt) {
			t.Fatalf("Available: %v", err)
		}
		if _, err := NewInProcess([]int{0}); !errors.Is(err, ErrLibrary) {
			t.Fatalf("NewInProcess: %v", err)
		}
		if _, err := NewUniqueID(); !errors.Is(err, ErrLibrary) {
			t.Fatalf("NewUniqueID: %v", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLibraryMissing$", "-test.v")
	cmd.Env = append(os.Environ(), "BN_NCCL_CHILD=1", LibraryEnv+"=/nonexistent/libnccl.so.2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
