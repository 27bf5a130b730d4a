package bn

// Converting layers to SyncBN and back (PyTorch's convert_sync_batchnorm).

import (
	"fmt"

	"github.com/gorgonia-bn/bn/collective"
)

// Sync makes existing layers synchronized over comm (SyncBN), as if they
// had been created with WithCommunicator(comm): PyTorch's
// convert_sync_batchnorm. Call it on every rank, with the same layers,
// between runs of the graphs. Each layer is matched across ranks by its
// key: its WithSyncKey if it was synchronized before, else its name
// (WithName), which must therefore have been given — a layer named by New
// is ErrOption. opts may hold WithSyncTimeout; any other option is
// ErrOption. The layers' copies in other graphs (In) are converted with
// them, and their step counters restart at 0 on every rank, so ranks with
// different histories (a model trained on one process, then synced) agree.
//
// Ghost layers that were synchronized already are ErrOption (their ops keep
// their place in the old global batch). On error no layer is changed.
func Sync(layers []Normalizer, comm collective.Communicator, opts ...Option) error {
	if comm == nil {
		return fmt.Errorf("%w: Sync: nil communicator", ErrOption)
	}
	base := defaults()
	base.sync = &syncConfig{comm: comm}
	c := base
	for i, o := range opts {
		if o == nil {
			return fmt.Errorf("%w: Sync: option %d is nil", ErrOption, i)
		}
		if err := o(&c); err != nil {
			return err
		}
	}
	sc0 := *c.sync
	c.sync, base.sync = nil, nil
	if c != base || sc0.key != "" || sc0.comm != comm || (sc0.timeout == 0 && len(opts) > 0) {
		return fmt.Errorf("%w: Sync takes only WithSyncTimeout (the layers keep their other options; a key per layer comes from its name)", ErrOption)
	}
	ls, err := convertible(layers, "Sync")
	if err != nil {
		return err
	}
	scs := make([]*syncConfig, len(ls))
	for i, l := range ls {
		sc := &syncConfig{comm: comm, timeout: sc0.timeout}
		name, explicit := l.cfg.name, !l.cfg.autoName
		if l.cfg.sync != nil {
			if l.cfg.ghost > 0 {
				return fmt.Errorf("%w: Sync: ghost layer %s is synchronized already", ErrOption, l.cfg.name)
			}
			name, explicit = l.cfg.sync.key, true
			if sc0.timeout == 0 {
				sc.timeout = l.cfg.sync.timeout
			}
		}
		if err := sc.setup(name, explicit); err != nil {
			return fmt.Errorf("%w (layer %s)", err, l.cfg.name)
		}
		scs[i] = sc
	}
	for i, l := range ls {
		l.mu.Lock()
		for _, c := range l.copiesLocked() {
			c.cfg.sync = scs[i]
		}
		l.calls = 0
		l.mu.Unlock()
	}
	return nil
}

// Unsync makes synchronized layers (and their copies in other graphs)
// plain ones again, normalizing with their own rank's batches; their
// running statistics stay as they are. Layers that are not synchronized
// are left alone. Call it between runs of the graphs.
func Unsync(layers []Normalizer) error {
	ls, err := convertible(layers, "Unsync")
	if err != nil {
		return err
	}
	for _, l := range ls {
		l.mu.Lock()
		for _, c := range l.copiesLocked() {
			c.cfg.sync = nil
		}
		l.mu.Unlock()
	}
	return nil
}

// convertible returns the layers, or ErrOption for nil ones.
func convertible(layers []Normalizer, what string) ([]*Layer, error) {
	ls := make([]*Layer, len(layers))
	for i, n := range layers {
		if isNil(n) || n.BatchNorm() == nil {
			return nil, fmt.Errorf("%w: %s: layer %d is nil", ErrOption, what, i)
		}
		ls[i] = n.BatchNorm()
	}
	return ls, nil
}
