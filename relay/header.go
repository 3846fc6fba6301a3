package relay

import (
	"reflect"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// undecodableHeader reports whether msg arrived with a header block that
// nats.go could not decode. nats.go then hands the message on with no
// headers at all, as if it had none, while a Direct Get of the same
// message (whose reply carries the stored block) fails to decode too: the
// relay must drop it on both paths, or a resume would not see what live
// saw. Only a raw publisher can write such a block.
//
// jetstream.Msg does not say how large the block was, so this reads it
// from the *nats.Msg inside (its wire size minus subject, reply and
// payload) by reflection, without unsafe. If nats.go's layout changes the
// answer is false (as before this check), and
// TestEventsUndecodableHeaderDropped fails.
func undecodableHeader(msg jetstream.Msg) bool {
	if msg.Headers() != nil {
		return false
	}
	v := reflect.ValueOf(msg)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return false
	}
	l := layoutOf(v.Elem().Type())
	if l == nil {
		return false
	}
	f := v.Elem().Field(l.msg)
	if f.IsNil() {
		return false
	}
	m := f.Elem()
	wsz := int(m.Field(l.wsz).Int())
	if wsz == 0 {
		return false // 0: not a received message (Size would compute it)
	}
	hdr := wsz - m.Field(l.subject).Len() - m.Field(l.reply).Len() - m.Field(l.data).Len()
	return hdr > 0
}

// undecodableRawHeader is undecodableHeader for a message the relay
// received on a subscription of its own, whose size it can ask for.
func undecodableRawHeader(m *nats.Msg) bool {
	return m.Header == nil && m.Size() > len(m.Subject)+len(m.Reply)+len(m.Data)
}

var natsMsgType = reflect.TypeFor[*nats.Msg]()

// msgLayout is where undecodableHeader finds its fields: looked up by name
// once per message type (FieldByName on every message was 2.5% of the
// relay's CPU at 20,000 events/s), then read by index.
type msgLayout struct {
	typ                       reflect.Type // the jetstream.Msg's struct type
	msg                       int          // its *nats.Msg field
	wsz, subject, reply, data int          // fields of nats.Msg
}

var lastLayout atomic.Pointer[msgLayout]

// layoutOf returns the layout of t, or nil when nats.go's types are not
// the shape undecodableHeader expects.
func layoutOf(t reflect.Type) *msgLayout {
	if l := lastLayout.Load(); l != nil && l.typ == t {
		return l
	}
	f, ok := t.FieldByName("msg")
	if !ok || f.Type != natsMsgType || len(f.Index) != 1 {
		return nil
	}
	l := &msgLayout{typ: t, msg: f.Index[0]}
	m := natsMsgType.Elem()
	for _, x := range []struct {
		name string
		kind reflect.Kind
		dst  *int
	}{{"wsz", reflect.Int, &l.wsz}, {"Subject", reflect.String, &l.subject}, {"Reply", reflect.String, &l.reply}, {"Data", reflect.Slice, &l.data}} {
		g, ok := m.FieldByName(x.name)
		if !ok || g.Type.Kind() != x.kind || len(g.Index) != 1 {
			return nil
		}
		*x.dst = g.Index[0]
	}
	lastLayout.Store(l)
	return l
}
