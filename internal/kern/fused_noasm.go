//go:build !amd64 || purego

package kern

func relu[T Float](xs []T)         { reluGo(xs) }
func maskTo[T Float](dy, y, g []T) { maskGo(dy, y, g) }
