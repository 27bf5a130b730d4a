// Package bn provides batch normalization operators for Gorgonia.
package bn

import (
	_ "go4.org/unsafe/assume-no-moving-gc"
	_ "gorgonia.org/gorgonia"
)
