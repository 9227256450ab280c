package hlc

import (
	"errors"
	"testing"
	"time"
)

type fakeTime struct{ t time.Time }

func (f *fakeTime) now() time.Time { return f.t }

func TestNowIsMonotonicWhenWallClockGoesBack(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1000, 0)}
	c := New(ft.now, 0)
	a := c.Now()
	ft.t = ft.t.Add(-time.Hour)
	b := c.Now()
	if !a.Less(b) {
		t.Fatalf("after the wall clock went back, %v does not order after %v", b, a)
	}
}

func TestUpdateOrdersLaterEventsAfterRemote(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1000, 0)}
	c := New(ft.now, time.Minute)
	remote := Timestamp{Wall: time.Unix(1030, 0).UnixNano(), Logical: 7}
	if err := c.Update(remote); err != nil {
		t.Fatal(err)
	}
	if n := c.Now(); !remote.Less(n) {
		t.Fatalf("event after receiving %v got %v", remote, n)
	}
}

func TestUpdateRefusesFarFuture(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1000, 0)}
	c := New(ft.now, time.Minute)
	remote := Timestamp{Wall: time.Unix(1000+3600, 0).UnixNano()}
	if err := c.Update(remote); !errors.Is(err, ErrAhead) {
		t.Fatalf("Update of a timestamp an hour ahead: err = %v, want ErrAhead", err)
	}
	if n := c.Now(); n.Wall != time.Unix(1000, 0).UnixNano() {
		t.Fatalf("clock was dragged forward to %v", n)
	}
}
