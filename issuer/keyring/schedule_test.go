package keyring_test

import (
	"slices"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
)

var testSchedule = keyring.Schedule{
	RotationPeriod:    24 * time.Hour,
	PublicationWindow: 10 * time.Minute,
	MaxTokenTTL:       time.Hour,
	Leeway:            time.Minute,
}

// baseRing: A signed for a day and is long gone, B signs now, C is next.
func baseRing() []keyring.Record {
	return []keyring.Record{
		{Seq: 1, KeyID: "A", Algorithm: keyring.ES256, Activate: t0.Add(-48 * time.Hour)},
		{Seq: 2, KeyID: "B", Algorithm: keyring.ES256, Activate: t0.Add(-24 * time.Hour)},
		{Seq: 3, KeyID: "C", Algorithm: keyring.ES256, Activate: t0.Add(5 * time.Minute)},
	}
}

func TestStates(t *testing.T) {
	const (
		next    = keyring.StateNext
		active  = keyring.StateActive
		retired = keyring.StateRetired
		removed = keyring.StateRemoved
		revoked = keyring.StateRevoked
	)
	retireEnd := t0.Add(5*time.Minute + time.Hour + time.Minute) // C.Activate + TTL + leeway
	for _, tc := range []struct {
		name     string
		override func(recs []keyring.Record) []keyring.Record
		now      time.Time
		want     []keyring.State
	}{
		{name: "baseline", now: t0, want: []keyring.State{removed, active, next}},
		{name: "just before activation", now: t0.Add(5*time.Minute - time.Microsecond), want: []keyring.State{removed, active, next}},
		{name: "next activates at its time", now: t0.Add(5 * time.Minute), want: []keyring.State{removed, retired, active}},
		{name: "retired until successor + TTL + leeway", now: retireEnd.Add(-time.Microsecond), want: []keyring.State{removed, retired, active}},
		{name: "then removed", now: retireEnd, want: []keyring.State{removed, removed, active}},
		{name: "A retired within TTL of B", now: t0.Add(-24*time.Hour + 30*time.Minute), want: []keyring.State{retired, active, next}},
		{name: "revoked next", now: t0, override: func(r []keyring.Record) []keyring.Record {
			r[2].Revoked = t0
			return r
		}, want: []keyring.State{removed, active, revoked}},
		{name: "revoked active falls back to its predecessor", now: t0, override: func(r []keyring.Record) []keyring.Record {
			r[1].Revoked = t0
			return r
		}, want: []keyring.State{active, revoked, next}},
		{name: "revocation in the future counts now", now: t0, override: func(r []keyring.Record) []keyring.Record {
			r[1].Revoked = t0.Add(time.Hour)
			return r
		}, want: []keyring.State{active, revoked, next}},
		{name: "equal Activate: greater Seq signs", now: t0, override: func(r []keyring.Record) []keyring.Record {
			r[0].Activate = r[1].Activate
			r[0].Seq = 4
			return r
		}, want: []keyring.State{active, removed, next}},
		{name: "empty", now: t0, override: func([]keyring.Record) []keyring.Record { return nil }, want: []keyring.State{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := baseRing()
			if tc.override != nil {
				recs = tc.override(recs)
			}
			got := testSchedule.States(recs, tc.now)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("States = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	// noNext: B active since t0-24h+10m, no next key; rotation is due at
	// B.Activate + 24h - 10m = t0.
	noNext := func(r []keyring.Record) []keyring.Record {
		r[1].Activate = t0.Add(-24*time.Hour + 10*time.Minute)
		return r[:2]
	}
	for _, tc := range []struct {
		name       string
		override   func(recs []keyring.Record) []keyring.Record
		now        time.Time
		alg        string
		wantCreate bool
		wantAt     time.Time
		wantDelete []string
	}{
		{name: "baseline: next exists, A deleted", now: t0, wantDelete: []string{"A"}},
		{name: "empty ring: first key signs now", now: t0, override: func([]keyring.Record) []keyring.Record { return nil }, wantCreate: true, wantAt: t0},
		{name: "not due yet", now: t0.Add(-time.Microsecond), override: noNext, wantDelete: []string{"A"}},
		{name: "due: activates at the end of the period", now: t0, override: noNext, wantCreate: true, wantAt: t0.Add(10 * time.Minute), wantDelete: []string{"A"}},
		{name: "late: still a full window", now: t0.Add(3 * time.Hour), override: noNext, wantCreate: true, wantAt: t0.Add(3*time.Hour + 10*time.Minute), wantDelete: []string{"A"}},
		{name: "due, period longer than window", now: t0.Add(-5 * time.Minute), override: func(r []keyring.Record) []keyring.Record {
			r[1].Activate = t0.Add(-24*time.Hour + 10*time.Minute)
			return r[:2]
		}, wantDelete: []string{"A"}},
		{name: "algorithm changed: rotate now", now: t0, alg: keyring.EdDSA, wantDelete: []string{"A"}},
		{name: "algorithm changed, no next", now: t0.Add(-time.Hour), alg: keyring.EdDSA, override: noNext, wantCreate: true, wantAt: t0.Add(-50 * time.Minute), wantDelete: []string{"A"}},
		{name: "only a revoked key: create", now: t0, override: func(r []keyring.Record) []keyring.Record {
			r[1].Revoked = t0
			return r[1:2]
		}, wantCreate: true, wantAt: t0},
		{name: "revoked key kept while its tokens live", now: t0, override: func(r []keyring.Record) []keyring.Record {
			r[0].Revoked = t0.Add(-time.Hour - time.Minute + time.Microsecond)
			return r
		}},
		{name: "revoked key deleted after TTL + leeway", now: t0, override: func(r []keyring.Record) []keyring.Record {
			r[0].Revoked = t0.Add(-time.Hour - time.Minute)
			return r
		}, wantDelete: []string{"A"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := baseRing()
			if tc.override != nil {
				recs = tc.override(recs)
			}
			alg := keyring.ES256
			if tc.alg != "" {
				alg = tc.alg
			}
			p := testSchedule.Plan(recs, tc.now, alg)
			if p.Create != tc.wantCreate || !p.Activate.Equal(tc.wantAt) {
				t.Errorf("Plan create = %v at %s, want %v at %s", p.Create, p.Activate, tc.wantCreate, tc.wantAt)
			}
			var del []string
			for _, r := range p.Delete {
				del = append(del, r.KeyID)
			}
			if !slices.Equal(del, tc.wantDelete) {
				t.Errorf("Plan delete = %v, want %v", del, tc.wantDelete)
			}
		})
	}
}
