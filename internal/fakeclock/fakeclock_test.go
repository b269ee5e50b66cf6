package fakeclock

import (
	"testing"
	"time"
)

func fired(ch <-chan time.Time) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestClock(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	c := New(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("Now = %v, want %v", c.Now(), t0)
	}
	now := c.After(0)
	past := c.After(-time.Second)
	second := c.After(time.Second)
	minute := c.After(time.Minute)
	if !fired(now) || !fired(past) {
		t.Fatal("After(d <= 0) did not fire at once")
	}
	if n, _ := c.Waiters(); n != 2 {
		t.Fatalf("%d waiters, want 2", n)
	}
	c.Advance(999 * time.Millisecond)
	if fired(second) || fired(minute) {
		t.Fatal("fired before its time")
	}
	c.Advance(time.Millisecond)
	select {
	case at := <-second:
		if !at.Equal(t0.Add(time.Second)) {
			t.Errorf("fired with %v, want %v", at, t0.Add(time.Second))
		}
	default:
		t.Fatal("After(1s) did not fire at 1s")
	}
	if fired(minute) {
		t.Fatal("After(1m) fired at 1s")
	}
	c.Advance(time.Hour)
	if !fired(minute) {
		t.Fatal("After(1m) did not fire at 1h")
	}
	if n, _ := c.Waiters(); n != 0 {
		t.Fatalf("%d waiters after all fired, want 0", n)
	}
}

func TestSet(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	c := New(t0)
	second := c.After(time.Second)
	minute := c.After(time.Minute)
	c.Set(t0) // to the same time: nothing fires
	if fired(second) || fired(minute) {
		t.Fatal("Set(Now()) fired a waiter")
	}
	at := t0.Add(30 * time.Second)
	c.Set(at)
	if !c.Now().Equal(at) {
		t.Fatalf("Now = %v after Set, want %v", c.Now(), at)
	}
	select {
	case got := <-second:
		if !got.Equal(at) {
			t.Errorf("fired with %v, want %v", got, at)
		}
	default:
		t.Fatal("After(1s) did not fire at Set(+30s)")
	}
	if fired(minute) {
		t.Fatal("After(1m) fired at Set(+30s)")
	}
	if n, _ := c.Waiters(); n != 1 {
		t.Fatalf("%d waiters, want 1", n)
	}

	defer func() {
		if recover() == nil {
			t.Error("Set to an earlier time did not panic")
		}
		if !c.Now().Equal(at) {
			t.Errorf("Now = %v after the refused Set, want %v", c.Now(), at)
		}
	}()
	c.Set(at.Add(-time.Nanosecond))
}

func TestWaitersAdded(t *testing.T) {
	c := New(time.Unix(0, 0))
	_, added := c.Waiters()
	done := make(chan (<-chan time.Time))
	go func() { done <- c.After(time.Second) }()
	<-added
	ch := <-done
	if n, _ := c.Waiters(); n != 1 {
		t.Fatalf("%d waiters, want 1", n)
	}
	c.Advance(time.Second)
	<-ch
}

func TestAdvanceConcurrent(t *testing.T) {
	c := New(time.Unix(0, 0))
	done := make(chan struct{})
	for range 8 {
		go func() {
			for range 100 {
				c.Now()
				c.After(time.Millisecond)
			}
			done <- struct{}{}
		}()
	}
	for range 100 {
		c.Advance(time.Millisecond)
	}
	for range 8 {
		<-done
	}
	c.Advance(time.Second)
	if n, _ := c.Waiters(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}
