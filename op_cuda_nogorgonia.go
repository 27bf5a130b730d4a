//go:build bncuda && !cuda

package bn

import (
	"fmt"

	"gorgonia.org/gorgonia"
)

// cudaDevice: without Gorgonia's cuda build there are no CUDA machines.
// (The tag bncuda compiles and tests the CUDA path of the ops on their own.)
func cudaDevice(extern gorgonia.External, dev gorgonia.Device) (*cudaDev, error) {
	return nil, fmt.Errorf("%w: Gorgonia was built without the cuda tag (machine %T, device %v)", ErrDevice, extern, dev)
}
