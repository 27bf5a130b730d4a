//go:build !cuda

package nccl

import (
	"context"
	"fmt"

	"github.com/gorgonia-bn/bn/collective"
)

// errNotBuilt is returned by everything in a build without the cuda tag.
var errNotBuilt = fmt.Errorf("nccl: %w (build with -tags cuda)", collective.ErrNotBuilt)

// Available reports why NCCL cannot be used: this binary was built without
// the cuda tag.
func Available() error { return errNotBuilt }

// Version returns an error wrapping collective.ErrNotBuilt.
func Version() (int, error) { return 0, errNotBuilt }

// NewUniqueID returns an error wrapping collective.ErrNotBuilt.
func NewUniqueID() (UniqueID, error) { return UniqueID{}, errNotBuilt }

// NewRank returns an error wrapping collective.ErrNotBuilt.
func NewRank(id UniqueID, size, rank, device int, opts ...Option) (*Comm, error) {
	return nil, errNotBuilt
}

// New returns an error wrapping collective.ErrNotBuilt.
func New(ctx context.Context, boot collective.Communicator, device int, opts ...Option) (*Comm, error) {
	return nil, errNotBuilt
}

// NewFromFile returns an error wrapping collective.ErrNotBuilt.
func NewFromFile(ctx context.Context, path string, size, rank, device int, opts ...Option) (*Comm, error) {
	return nil, errNotBuilt
}

// NewInProcess returns an error wrapping collective.ErrNotBuilt.
func NewInProcess(devices []int, opts ...Option) ([]*Comm, error) {
	return nil, errNotBuilt
}

// Comm is an NCCL communicator; without the cuda tag none can be made, and
// every method of the zero Comm fails with collective.ErrNotBuilt.
type Comm struct{}

var _ collective.Communicator = (*Comm)(nil)

func (c *Comm) Rank() int   { return 0 }
func (c *Comm) Size() int   { return 0 }
func (c *Comm) Device() int { return -1 }

func (c *Comm) AllReduce(ctx context.Context, buf collective.Buffer, op collective.ReduceOp) error {
	return errNotBuilt
}

func (c *Comm) AllGather(ctx context.Context, send, recv collective.Buffer, counts []int) error {
	return errNotBuilt
}

func (c *Comm) Broadcast(ctx context.Context, buf collective.Buffer, root int) error {
	return errNotBuilt
}

func (c *Comm) AllToAll(ctx context.Context, send collective.Buffer, sendCounts []int, recv collective.Buffer, recvCounts []int) error {
	return errNotBuilt
}

func (c *Comm) Barrier(ctx context.Context) error { return errNotBuilt }

func (c *Comm) Split(ctx context.Context, color, key int) (collective.Communicator, error) {
	return nil, errNotBuilt
}

func (c *Comm) Abort(err error) {}
func (c *Comm) Close() error    { return nil }
