package manifests

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/proxy/source"
)

// Kinds this source accepts.
const (
	kindService       = "Service"
	kindEndpointSlice = "EndpointSlice"
	kindList          = "List"
)

// key names an object: kind, namespace and name.
type key struct{ kind, namespace, name string }

func (k key) String() string { return k.kind + " " + k.namespace + "/" + k.name }

// object is one decoded and validated Service or EndpointSlice, with where
// it came from for messages.
type object struct {
	key
	where string // "document 2" or "document 1 items[3]"
	svc   *v1.Service
	slice *discovery.EndpointSlice
}

// chunk is one YAML document of a file and the line it starts on.
type chunk struct {
	line int
	text []byte
}

// splitDocuments cuts a file at "---" lines (a separator may carry a
// trailing comment). Documents that hold only blanks and comments are left
// out, so the first real document is document 1 however the file starts.
func splitDocuments(data []byte) []chunk {
	var out []chunk
	start, begin, line := 0, 1, 1
	for i := 0; i < len(data); line++ {
		next := len(data)
		if n := bytes.IndexByte(data[i:], '\n'); n >= 0 {
			next = i + n + 1
		}
		if isSeparator(data[i:next]) {
			out = appendChunk(out, chunk{begin, data[start:i]})
			start, begin = next, line+1
		}
		i = next
	}
	return appendChunk(out, chunk{begin, data[start:]})
}

func appendChunk(out []chunk, c chunk) []chunk {
	for l := range strings.SplitSeq(string(c.text), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return append(out, c)
		}
	}
	return out
}

func isSeparator(line []byte) bool {
	rest, ok := bytes.CutPrefix(bytes.TrimRight(line, " \t\r\n"), []byte("---"))
	if !ok {
		return false
	}
	rest = bytes.TrimLeft(rest, " \t")
	return len(rest) == 0 || rest[0] == '#'
}

// decodeFile decodes and validates every document of a file. It returns the
// objects kept (other proxies' and headless ones are dropped) and every
// problem found, each prefixed with name and the document.
func decodeFile(name string, data []byte) ([]object, error) {
	var objs []object
	var errs []error
	seen := map[key]string{}
	for i, c := range splitDocuments(data) {
		where := fmt.Sprintf("document %d", i+1)
		got, err := decodeDocument(c, where)
		if err != nil {
			errs = append(errs, prefixErr(name, err))
		}
		for _, o := range got {
			if prev, dup := seen[o.key]; dup {
				errs = append(errs, fmt.Errorf("%s: %s (%s): duplicate: %s already defined in %s",
					name, o.where, o.key, o.key, prev))
				continue
			}
			seen[o.key] = o.where
			objs = append(objs, o)
		}
	}
	return objs, errors.Join(errs...)
}

// prefixErr puts the file name in front of each joined error.
func prefixErr(name string, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for i, e := range list {
		list[i] = fmt.Errorf("%s: %w", name, e)
	}
	return errors.Join(list...)
}

var yamlLine = regexp.MustCompile(`yaml: line (\d+):`)

// toJSON converts one document to JSON, reporting syntax errors with the
// line number in the file rather than in the document.
func toJSON(c chunk, where string) ([]byte, error) {
	j, err := yaml.YAMLToJSONStrict(c.text)
	if err == nil {
		return j, nil
	}
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
		n, _ := strconv.Atoi(msg[m[2]:m[3]])
		msg = msg[:m[2]] + strconv.Itoa(n+c.line-1) + msg[m[3]:]
	} else {
		msg += fmt.Sprintf(" (document starts at line %d)", c.line)
	}
	return nil, fmt.Errorf("%s: %s", where, msg)
}

// decodeDocument decodes one document: a Service, an EndpointSlice or a
// List of them.
func decodeDocument(c chunk, where string) ([]object, error) {
	j, err := toJSON(c, where)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, fmt.Errorf("%s: not an object (a mapping with apiVersion and kind)", where)
	}
	if tm.Kind != kindList || tm.APIVersion != "v1" {
		return decodeObject(j, tm, where)
	}
	var l list
	if err := strictDecode(j, &l); err != nil {
		return nil, fmt.Errorf("%s (List): %w", where, err)
	}
	var objs []object
	var errs []error
	for i, item := range l.Items {
		w := fmt.Sprintf("%s items[%d]", where, i)
		if err := json.Unmarshal(item, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s: not an object (a mapping with apiVersion and kind)", w))
			continue
		}
		o, err := decodeObject(item, tm, w)
		objs = append(objs, o...)
		errs = append(errs, err)
	}
	return objs, errors.Join(errs...)
}

// list is a v1 List whose items are decoded one by one.
type list struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []json.RawMessage `json:"items"`
}

// decodeObject decodes, validates and filters one Service or EndpointSlice.
// It returns no object for one that belongs to another proxy or is headless.
func decodeObject(j []byte, tm metav1.TypeMeta, where string) ([]object, error) {
	switch {
	case tm.APIVersion == "v1" && tm.Kind == kindService:
		svc := &v1.Service{}
		return finish(j, kindService, svc, &svc.ObjectMeta, where, func() field.ErrorList { return plan.ValidateService(svc) },
			func(o *object) { o.svc = svc })
	case tm.APIVersion == discovery.SchemeGroupVersion.String() && tm.Kind == kindEndpointSlice:
		s := &discovery.EndpointSlice{}
		return finish(j, kindEndpointSlice, s, &s.ObjectMeta, where, func() field.ErrorList { return plan.ValidateEndpointSlice(s) },
			func(o *object) { o.slice = s })
	case tm.Kind == "":
		return nil, fmt.Errorf("%s: kind: required (want v1 Service or discovery.k8s.io/v1 EndpointSlice)", where)
	default:
		return nil, fmt.Errorf("%s (%s %s): kind %s %s is not supported (want v1 Service or discovery.k8s.io/v1 EndpointSlice)",
			where, tm.APIVersion, tm.Kind, tm.APIVersion, tm.Kind)
	}
}

// finish decodes j strictly into obj, defaults the namespace, drops objects
// that are not ours and validates the rest with the plan's validator, so
// that a file is held to the same rules as the objects of an API server.
func finish(j []byte, kind string, obj any, meta *metav1.ObjectMeta, where string, validate func() field.ErrorList, set func(*object)) ([]object, error) {
	if err := strictDecode(j, obj); err != nil {
		return nil, fmt.Errorf("%s (%s): %w", where, describe(j, kind), err)
	}
	if meta.Namespace == "" {
		meta.Namespace = metav1.NamespaceDefault
	}
	o := object{key: key{kind, meta.Namespace, meta.Name}, where: where}
	if ignored(meta.Labels) {
		return nil, nil
	}
	var errs []error
	for _, e := range validate() {
		errs = append(errs, fmt.Errorf("%s (%s): %w", where, o.key, e))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	set(&o)
	return []object{o}, nil
}

// ignored says whether an object is another proxy's or headless, which
// kube-proxy (and the kube source) never see.
func ignored(labels map[string]string) bool {
	_, other := labels[source.LabelServiceProxyName]
	_, headless := labels[source.LabelHeadless]
	return other || headless
}

// describe names an object that failed to decode as "Kind namespace/name",
// reading what it can of its metadata leniently, or just "Kind".
func describe(j []byte, kind string) string {
	var m struct {
		Metadata struct{ Name, Namespace string } `json:"metadata"`
	}
	if json.Unmarshal(j, &m) != nil || m.Metadata.Name == "" {
		return kind
	}
	return key{kind, cmp.Or(m.Metadata.Namespace, metav1.NamespaceDefault), m.Metadata.Name}.String()
}

// strictDecode decodes JSON into obj as the API server does: field names
// match exactly, and a field obj has no place for, or one given twice, is
// an error naming the field by its path.
func strictDecode(j []byte, obj any) error {
	strict, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		return typeErr(err)
	}
	var errs []error
	for _, e := range strict {
		if fe, ok := e.(kjson.FieldError); ok {
			// "unknown field \"a.b\"" reads "a.b: unknown field".
			kind := strings.TrimSuffix(fe.Error(), " "+strconv.Quote(fe.FieldPath()))
			e = fmt.Errorf("%s: %s", fe.FieldPath(), kind)
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// typeMismatch is how sigs.k8s.io/json words a value of the wrong type
// (its error type is internal): "json: cannot unmarshal string into Go
// struct field ServicePort.spec.ports.port of type int32".
var typeMismatch = regexp.MustCompile(`^json: cannot unmarshal (\S+) into Go struct field [^.\s]+\.(\S+) of type (\S+)$`)

// typeErr rewrites a type mismatch as "field: want T, got V".
func typeErr(err error) error {
	if m := typeMismatch.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%s: want %s, got %s", m[2], m[3], m[1])
	}
	return err
}
