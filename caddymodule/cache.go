package caddymodule

import (
	"sync"
	"sync/atomic"
)

// boundedCache maps strings to values that are costly to compute and
// cheap to compute again, for concurrent use. It holds at most size
// entries: the put that would go beyond size empties it first, so hostile
// inputs cannot grow it without limit. The zero value is not usable.
type boundedCache[V any] struct {
	size    int64
	entries sync.Map // string → V
	count   atomic.Int64
}

func newBoundedCache[V any](size int64) *boundedCache[V] {
	return &boundedCache[V]{size: size}
}

// get returns the value cached for key, if any.
func (c *boundedCache[V]) get(key string) (V, bool) {
	if value, ok := c.entries.Load(key); ok {
		return value.(V), true
	}
	var zero V
	return zero, false
}

// put caches value for key.
func (c *boundedCache[V]) put(key string, value V) {
	if c.count.Add(1) > c.size {
		c.entries.Clear()
		c.count.Store(1)
	}
	c.entries.Store(key, value)
}
