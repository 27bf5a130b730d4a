// Package cu is a CPU stand-in for the subset of gorgonia.org/cu that
// cudaops and collective/nccl use, for running their cuda-tagged tests on a
// machine without a GPU (see ../run.sh). "Device memory" is host memory;
// kernel launches run bn.cu compiled for the CPU by emu.cc, one block after
// another, each CUDA thread a ucontext fiber; streams are backed by the fake
// libnccl (fakenccl.c), whose operations run on worker threads.
package cu

/*
#cgo CXXFLAGS: -std=c++17 -O2 -Wno-unused-function
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include <string.h>
int emu_launch(const char *name, int gx, int gy, int gz, int bx, int by, int bz, void **args);
int emu_has(const char *name);
#include <dlfcn.h>
#include <stdint.h>
static void *fakelib(void) {
	static void *h;
	if (!h) { const char *p = getenv("BN_NCCL_LIB"); if (p) h = dlopen(p, RTLD_NOW | RTLD_NOLOAD); }
	return h;
}
static long pending(uintptr_t s0) { void *s = (void *)s0;
	void *h = fakelib(); if (!h) return 0;
	long (*f)(void *) = (long (*)(void *))dlsym(h, "fake_pending"); return f ? f(s) : 0;
}
static long total(void) {
	void *h = fakelib(); if (!h) return 0;
	long (*f)(void) = (long (*)(void))dlsym(h, "fake_total"); return f ? f() : 0;
}
*/
import "C"
import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

type cuResult int

func (e cuResult) Error() string { return fmt.Sprintf("emulated CUDA error %d", int(e)) }

const (
	NoDevice     cuResult = 100
	InvalidValue cuResult = 1
	NotFound     cuResult = 500
	// InvalidContext is what the driver returns for a call on an OS thread
	// with no current context.
	InvalidContext cuResult = 201
)

// As in the driver, the current context belongs to the calling OS thread
// (a stack per thread: Push/Pop, Set replaces the top). Every call that
// needs a context fails with InvalidContext on a thread without one, so a
// test that uses the device from a goroutine not locked to a thread where
// it made the context current fails here as it does on a GPU.
var (
	ctxMu    sync.Mutex
	ctxStack = map[int][]CUContext{}
)

func current() CUContext {
	ctxMu.Lock()
	defer ctxMu.Unlock()
	st := ctxStack[syscall.Gettid()]
	if len(st) == 0 {
		return CUContext{}
	}
	return st[len(st)-1]
}

func needCtx() error {
	if current().c == 0 {
		return InvalidContext
	}
	return nil
}

type DevicePtr uintptr
type Stream struct{ s uintptr }

var NoStream = Stream{}

type StreamFlags byte

const (
	DefaultStream StreamFlags = 0
	NonBlocking   StreamFlags = 1
)

var streamCtr uintptr = 0x100

func MakeStream(StreamFlags) (Stream, error) {
	if err := needCtx(); err != nil {
		return Stream{}, err
	}
	allocMu.Lock()
	defer allocMu.Unlock()
	streamCtr += 16
	return Stream{streamCtr}, nil
}
func (s *Stream) Destroy() error { *s = Stream{}; return nil }
func (s Stream) Synchronize() error {
	if err := needCtx(); err != nil {
		return err
	}
	for C.pending(C.uintptr_t(s.s)) > 0 {
		time.Sleep(10 * time.Microsecond)
	}
	return nil
}
func (s Stream) Query() error {
	if C.pending(C.uintptr_t(s.s)) > 0 {
		return NotReady
	}
	return nil
}

const NotReady cuResult = 600

func PushCurrentCtx(c CUContext) error {
	ctxMu.Lock()
	defer ctxMu.Unlock()
	t := syscall.Gettid()
	ctxStack[t] = append(ctxStack[t], c)
	return nil
}
func PopCurrentCtx() (CUContext, error) {
	ctxMu.Lock()
	defer ctxMu.Unlock()
	t := syscall.Gettid()
	st := ctxStack[t]
	if len(st) == 0 {
		return CUContext{}, InvalidContext
	}
	ctxStack[t] = st[:len(st)-1]
	return st[len(st)-1], nil
}
func CurrentContext() (CUContext, error) { return current(), nil }
func SetCurrentContext(c CUContext) error {
	ctxMu.Lock()
	defer ctxMu.Unlock()
	t := syscall.Gettid()
	if st := ctxStack[t]; len(st) > 0 {
		st[len(st)-1] = c
	} else {
		ctxStack[t] = []CUContext{c}
	}
	return nil
}
func (d Device) ReleasePrimaryCtx() error { return nil }

var allocs = map[uintptr]int64{}
var allocMu sync.Mutex

func (d DevicePtr) AddressRange() (int64, DevicePtr, error) {
	allocMu.Lock()
	defer allocMu.Unlock()
	for b, n := range allocs {
		if uintptr(d) >= b && uintptr(d) < b+uintptr(n) {
			return n, DevicePtr(b), nil
		}
	}
	return 0, 0, InvalidValue
}

type EventFlags byte

const DefaultEvent EventFlags = 0

type Event struct{ t *time.Time }

func MakeEvent(EventFlags) (Event, error) { return Event{new(time.Time)}, nil }
func DestroyEvent(e *Event) error         { return nil }
func (e Event) Record(Stream) error       { *e.t = time.Now(); return nil }
func (e Event) Synchronize() error        { return nil }
func (e Event) Elapsed(end Event) (float64, error) {
	return float64(end.t.Sub(*e.t).Nanoseconds()) / 1e6, nil
}

type Device int
type CUContext struct{ c uintptr }

func NumDevices() (int, error) {
	if n, err := strconv.Atoi(os.Getenv("FAKE_NDEV")); err == nil {
		return n, nil
	}
	return 1, nil
}
func GetDevice(i int) (Device, error)                 { return Device(i), nil }
func CurrentDevice() (Device, error)                  { return 0, nil }
func (d Device) ComputeCapability() (int, int, error) { return 9, 0, nil }
func (d Device) Name() (string, error)                { return "emulated", nil }
func (d Device) RetainPrimaryCtx() (CUContext, error) { return CUContext{1}, nil }
func Version() int                                    { return 0 }
func Synchronize() error {
	if err := needCtx(); err != nil {
		return err
	}
	for C.total() > 0 {
		time.Sleep(10 * time.Microsecond)
	}
	return nil
}

func MemAlloc(n int64) (DevicePtr, error) {
	if err := needCtx(); err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, InvalidValue
	}
	p := C.malloc(C.size_t(n))
	allocMu.Lock()
	allocs[uintptr(p)] = n
	allocMu.Unlock()
	return DevicePtr(uintptr(p)), nil
}
func MemFree(p DevicePtr) error {
	if err := needCtx(); err != nil {
		return err
	}
	allocMu.Lock()
	delete(allocs, uintptr(p))
	allocMu.Unlock()
	C.free(unsafe.Pointer(uintptr(p)))
	return nil
}
func MemcpyHtoD(d DevicePtr, s unsafe.Pointer, n int64) error {
	if err := needCtx(); err != nil {
		return err
	}
	C.memcpy(unsafe.Pointer(uintptr(d)), s, C.size_t(n))
	return nil
}
func MemcpyHtoDAsync(d DevicePtr, s unsafe.Pointer, n int64, _ Stream) error {
	return MemcpyHtoD(d, s, n)
}
func MemcpyDtoH(d unsafe.Pointer, s DevicePtr, n int64) error {
	if err := needCtx(); err != nil {
		return err
	}
	C.memcpy(d, unsafe.Pointer(uintptr(s)), C.size_t(n))
	return nil
}
func MemcpyDtoD(d, s DevicePtr, n int64) error {
	if err := needCtx(); err != nil {
		return err
	}
	C.memmove(unsafe.Pointer(uintptr(d)), unsafe.Pointer(uintptr(s)), C.size_t(n))
	return nil
}
func MemcpyDtoDAsync(d, s DevicePtr, n int64, _ Stream) error { return MemcpyDtoD(d, s, n) }
func MemsetD8(d DevicePtr, v byte, n int64) error {
	if err := needCtx(); err != nil {
		return err
	}
	C.memset(unsafe.Pointer(uintptr(d)), C.int(v), C.size_t(n))
	return nil
}

type Module struct{}

func LoadData(string) (Module, error) {
	if err := needCtx(); err != nil {
		return Module{}, err
	}
	return Module{}, nil
}
func (Module) Unload() error { return nil }

type Function struct{ name string }

func (Module) Function(name string) (Function, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if C.emu_has(cs) == 0 {
		return Function{}, NotFound
	}
	return Function{name}, nil
}

// Launch copies each parameter as 64 bits, like the real cu.
func (f Function) Launch(gx, gy, gz, bx, by, bz, shm int, s Stream, params []unsafe.Pointer) error {
	if err := needCtx(); err != nil {
		return err
	}
	argv := C.malloc(C.size_t(8 * max(len(params), 1)))
	argp := C.malloc(C.size_t(8 * max(len(params), 1)))
	defer C.free(argv)
	defer C.free(argp)
	for i := range params {
		*(*unsafe.Pointer)(unsafe.Add(argp, 8*i)) = unsafe.Add(argv, 8*i)
		*(*uint64)(unsafe.Add(argv, 8*i)) = *(*uint64)(params[i])
	}
	cs := C.CString(f.name)
	defer C.free(unsafe.Pointer(cs))
	if r := C.emu_launch(cs, C.int(gx), C.int(gy), C.int(gz), C.int(bx), C.int(by), C.int(bz), (*unsafe.Pointer)(argp)); r != 0 {
		return cuResult(r)
	}
	return nil
}
