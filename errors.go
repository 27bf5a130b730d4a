package bn

import "errors"

// Errors returned by this package. They are wrapped with details; test for
// them with errors.Is.
var (
	// ErrShape reports an input of the wrong rank or channel count, or a γ/β
	// of the wrong shape.
	ErrShape = errors.New("bn: bad shape")
	// ErrDtype reports an element type other than float32 and float64, or
	// inputs whose types disagree.
	ErrDtype = errors.New("bn: unsupported dtype")
	// ErrTooFewValues reports a training-mode batch (or ghost group, or
	// domain) with a single value per channel, whose variance is undefined.
	ErrTooFewValues = errors.New("bn: expected more than 1 value per channel when using batch statistics")
	// ErrOption reports an invalid option value (eps ≤ 0, momentum outside
	// [0,1], ghost batch size < 1, …).
	ErrOption = errors.New("bn: invalid option")
	// ErrState reports running statistics or a saved layer state of the wrong
	// shape or type, or a corrupt encoding.
	ErrState = errors.New("bn: invalid state")
	// ErrSync reports ranks of a synchronized layer that disagree (channel
	// count, layer order, step) or a failed collective.
	ErrSync = errors.New("bn: synchronization failed")
	// ErrDevice reports a failure of the CUDA execution path (builds with the
	// cuda tag): a machine that is not a CUDA machine, a failed CUDA call.
	ErrDevice = errors.New("bn: CUDA device")
)

// Cause returns err with the wrapping of Gorgonia's machines removed, so
// that errors.Is and errors.As see this package's errors:
//
//	if err := m.RunAll(); errors.Is(bn.Cause(err), bn.ErrTooFewValues) { … }
//
// Gorgonia v0.9.18's machines return an error that holds the op's error
// behind an Err method but has no Unwrap method, which hides it from
// errors.Is; Cause follows Err. Other errors are returned unchanged.
func Cause(err error) error {
	for {
		if _, ok := err.(interface{ Unwrap() error }); ok {
			return err
		}
		e, ok := err.(interface{ Err() error })
		if !ok || e.Err() == nil {
			return err
		}
		err = e.Err()
	}
}
