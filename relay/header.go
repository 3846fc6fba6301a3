package relay

import (
	"reflect"

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
	f := v.Elem().FieldByName("msg")
	if !f.IsValid() || f.Type() != natsMsgType || f.IsNil() {
		return false
	}
	m := f.Elem()
	wsz := m.FieldByName("wsz")
	if !wsz.IsValid() || wsz.Kind() != reflect.Int || wsz.Int() == 0 {
		return false // 0: not a received message (Size would compute it)
	}
	hdr := int(wsz.Int()) - m.FieldByName("Subject").Len() - m.FieldByName("Reply").Len() - m.FieldByName("Data").Len()
	return hdr > 0
}

var natsMsgType = reflect.TypeFor[*nats.Msg]()
