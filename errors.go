package bn

import (
	"errors"
	"reflect"
	"unsafe"
)

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
)

// Cause returns err with the wrapping of Gorgonia's machines removed, so
// that errors.Is and errors.As see this package's errors:
//
//	if err := m.RunAll(); errors.Is(bn.Cause(err), bn.ErrTooFewValues) { … }
//
// Gorgonia v0.9.18's TapeMachine returns a struct that embeds the op's error
// without an Unwrap method, which hides it from errors.Is; Cause reads the
// embedded error out. Other errors are returned unchanged.
func Cause(err error) error {
	for err != nil {
		if inner := embeddedError(err); inner != nil {
			err = inner
			continue
		}
		return err
	}
	return nil
}

// embeddedError returns the error embedded in a struct error value without
// an Unwrap method, or nil.
func embeddedError(err error) error {
	if _, ok := err.(interface{ Unwrap() error }); ok {
		return nil
	}
	v := reflect.ValueOf(err)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	errType := reflect.TypeFor[error]()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.Anonymous || f.Type != errType {
			continue
		}
		cp := reflect.New(v.Type()).Elem()
		cp.Set(v)
		fv := cp.Field(i)
		inner, _ := reflect.NewAt(fv.Type(), unsafe.Pointer(fv.UnsafeAddr())).Elem().Interface().(error)
		return inner
	}
	return nil
}
