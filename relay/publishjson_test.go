package relay

import (
	"bytes"
	"encoding/json"
	"testing"
)

// slowDecodePublish is what parsePublish does with a body decodePublish
// declines: encoding/json, then PublishRequest.payload.
func slowDecodePublish(body []byte) (PublishRequest, []byte, bool) {
	var p PublishRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || dec.More() {
		return p, nil, false
	}
	if len(p.Data) == 0 {
		return p, nil, true
	}
	data, err := p.payload()
	return p, data, err == nil
}

var publishBodies = []string{
	`{"app_id":"demo","feed":"alice","data":{"t":1764645000000000000,"n":12}}`,
	`{"app_id":"demo","feed":"alice","topic":"orders.eu","event":"order","data":"hello","connection_id":"tab-0001-ab","id":"x-1"}`,
	` { "app_id" : "demo" , "feed" : "alice" , "data" : [ 1 , -2.5e+3 , true , false , null , { } , [ ] , "a b\"\\\/\b\f\n\r\t\u00e9" ] } ` + "\n",
	`{"data":null,"app_id":"démo","feed":"al"}`,
	`{"app_id":"demo","feed":"alice","data":"café ☕"}`,
	`{"app_id":"demo","feed":"alice","data":{"nested":{"deep":[1,{"x":"y\"z"}]}}}`,
	`{"app_id":"demo","feed":"alice","data":"\ud83d\ude00"}`,
	`{}`,
	`{"feed":"alice"}`,
	`{"App_ID":"demo","feed":"alice","data":1}`,
	`{"app_id":"demo","app_id":"other","feed":"alice","data":1}`,
	`{"app_id":"demo","feed":"alice","data":1}{}`,
	`{"app_id":"demo","feed":"alice","data":01}`,
	`{"app_id":"demo","feed":"alice","data":1.}`,
	`{"app_id":"demo","feed":"alice","data":"a` + "\x01" + `"}`,
	`{"app_id":"demo","feed":"alice","data":"` + "\xff" + `"}`,
	`{"app_id":"de` + "\xc3" + `","feed":"alice","data":1}`,
	`{"app_id":null,"feed":"alice","data":1}`,
	`{"app_id":7,"feed":"alice","data":1}`,
	`{"app_id":"demo","feed":"alice","data":{"a":1,}}`,
	`{"app_id":"demo","feed":"alice","data":[1 2]}`,
	`{"app_id":"demo","feed":"alice","data":"\x"}`,
	`{"app_id":"demo","feed":"alice","data":"\u12"}`,
	`{"app_id":"demo","feed":"alice","data":tru}`,
	`{"app_id":"demo","feed":"alice","extra":1,"data":1}`,
	`{"app_id":"demo","feed":"alice","data":1`,
	`[]`, ``, `"x"`, `nul`, "\ufeff{}",
}

// TestDecodePublish: the plain bodies every publisher sends are read by
// decodePublish itself (or it would spare nothing), and its answers are
// encoding/json's (FuzzDecodePublish tries more).
func TestDecodePublish(t *testing.T) {
	for _, body := range publishBodies[:6] {
		var p PublishRequest
		if _, ok := decodePublish([]byte(body), &p); !ok {
			t.Errorf("decodePublish declines %s", body)
		}
	}
	for _, body := range publishBodies {
		checkDecodePublish(t, []byte(body))
	}
}

// FuzzDecodePublish holds decodePublish to encoding/json: whatever it
// accepts, encoding/json accepts too, with the same fields and payload.
// Corpus: publishBodies (a finding would be kept in
// testdata/fuzz/FuzzDecodePublish; none so far).
func FuzzDecodePublish(f *testing.F) {
	for _, body := range publishBodies {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDecodePublish(t, body) })
}

func checkDecodePublish(t *testing.T, body []byte) {
	t.Helper()
	var p PublishRequest
	data, ok := decodePublish(body, &p)
	if !ok {
		return
	}
	want, wantData, wantOK := slowDecodePublish(body)
	if !wantOK {
		t.Fatalf("%q: decodePublish accepts what encoding/json refuses", body)
	}
	if p.AppID != want.AppID || p.Feed != want.Feed || p.Topic != want.Topic || p.Event != want.Event ||
		p.ConnectionID != want.ConnectionID || p.ID != want.ID || !bytes.Equal(p.Data, want.Data) {
		t.Fatalf("%q: decodePublish %+v, encoding/json %+v", body, p, want)
	}
	if !bytes.Equal(data, wantData) || (data == nil) != (wantData == nil) {
		t.Fatalf("%q: payload %q, encoding/json's %q", body, data, wantData)
	}
}

// BenchmarkDecodePublish is the reading of bench's publish body: by
// decodePublish (what parsePublish does), and by encoding/json and
// PublishRequest.payload (what it did, and still does for other shapes).
func BenchmarkDecodePublish(b *testing.B) {
	body := []byte(`{"app_id":"bench","feed":"f17","data":{"t":1764645000000000000,"n":12345}}`)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var p PublishRequest
			if _, ok := decodePublish(body, &p); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok := slowDecodePublish(body); !ok {
				b.Fatal("refused")
			}
		}
	})
}
