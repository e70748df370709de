package ortgraph

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Graph indexes a model's main graph: producer of every value, initializers by name and
// value types. Passes add nodes through it (Op, AddInitializer, ...) so the index stays
// current; code that edits the protobuf directly must call Reindex.
type Graph struct {
	M     *Model
	P     *onnxpb.GraphProto
	prod  map[string]*onnxpb.NodeProto
	inits map[string]*onnxpb.TensorProto
	types map[string]*onnxpb.TypeProto
	vinfo map[string]*onnxpb.ValueInfoProto // value_info entries by name
	used  map[string]bool
	seq   int
	// Scope, when set, prefixes the names of emitted nodes (e.g. "lora/layers.0/q_proj").
	Scope string
}

// NewGraph indexes m's main graph.
func NewGraph(m *Model) *Graph {
	g := &Graph{M: m, P: m.P.Graph}
	g.Reindex()
	return g
}

// NewSubgraph indexes a subgraph (e.g. a Loop body) of m. Names are drawn from the same
// pool as parent's so values stay unique across scopes, as ONNX Runtime expects.
func NewSubgraph(parent *Graph, gp *onnxpb.GraphProto) *Graph {
	g := &Graph{M: parent.M, P: gp}
	g.Reindex()
	g.used = parent.used
	return g
}

// Reindex rebuilds the index after direct edits of the protobuf.
func (g *Graph) Reindex() {
	g.prod = map[string]*onnxpb.NodeProto{}
	g.inits = map[string]*onnxpb.TensorProto{}
	g.types = map[string]*onnxpb.TypeProto{}
	g.used = map[string]bool{}
	for _, t := range g.P.Initializer {
		g.inits[t.Name] = t
		g.used[t.Name] = true
		g.types[t.Name] = TensorType(t.DataType, t.Dims)
	}
	for _, vi := range g.P.Input {
		g.used[vi.Name] = true
		g.types[vi.Name] = vi.Type
	}
	g.vinfo = map[string]*onnxpb.ValueInfoProto{}
	for _, vi := range g.P.ValueInfo {
		g.types[vi.Name] = vi.Type
		g.vinfo[vi.Name] = vi
	}
	for _, vi := range g.P.Output {
		g.types[vi.Name] = vi.Type
	}
	for _, n := range g.P.Node {
		g.used[n.Name] = true
		for _, o := range n.Output {
			if o != "" {
				g.prod[o] = n
				g.used[o] = true
			}
		}
	}
}

// Producer returns the node producing v, or nil for graph inputs and initializers.
func (g *Graph) Producer(v string) *onnxpb.NodeProto { return g.prod[v] }

// Initializer returns the initializer named v, or nil.
func (g *Graph) Initializer(v string) *onnxpb.TensorProto { return g.inits[v] }

// Type returns the recorded type of v (nil when unknown).
func (g *Graph) Type(v string) *onnxpb.TypeProto { return g.types[v] }

// SetType records the type of v (and writes it as value_info so the saved graph keeps it).
func (g *Graph) SetType(v string, t *onnxpb.TypeProto) {
	if t == nil {
		return
	}
	g.types[v] = t
	if g.inits[v] != nil || g.isGraphIO(v) {
		return
	}
	if vi := g.vinfo[v]; vi != nil {
		vi.Type = t
		return
	}
	vi := &onnxpb.ValueInfoProto{Name: v, Type: t}
	g.P.ValueInfo = append(g.P.ValueInfo, vi)
	g.vinfo[v] = vi
}

func (g *Graph) isGraphIO(v string) bool {
	for _, x := range g.P.Input {
		if x.Name == v {
			return true
		}
	}
	for _, x := range g.P.Output {
		if x.Name == v {
			return true
		}
	}
	return false
}

// ElemType returns the element type of v, or 0 when unknown.
func (g *Graph) ElemType(v string) int32 {
	if t := g.types[v]; t != nil && t.GetTensorType() != nil {
		return t.GetTensorType().ElemType
	}
	return 0
}

// Rank returns the rank of v, or -1 when unknown.
func (g *Graph) Rank(v string) int {
	if t := g.types[v]; t != nil && t.GetTensorType() != nil && t.GetTensorType().Shape != nil {
		return len(t.GetTensorType().Shape.Dim)
	}
	return -1
}

// Dims returns the static dims of v (-1 for symbolic ones) or nil when the rank is unknown.
func (g *Graph) Dims(v string) []int64 {
	t := g.types[v]
	if t == nil || t.GetTensorType() == nil || t.GetTensorType().Shape == nil {
		return nil
	}
	out := make([]int64, len(t.GetTensorType().Shape.Dim))
	for i, d := range t.GetTensorType().Shape.Dim {
		if dv, ok := d.Value.(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
			out[i] = dv.DimValue
		} else {
			out[i] = -1
		}
	}
	return out
}

// SymDims returns the dims of v as strings: the number, the symbolic name, or "?".
func (g *Graph) SymDims(v string) []string {
	t := g.types[v]
	if t == nil || t.GetTensorType() == nil || t.GetTensorType().Shape == nil {
		return nil
	}
	out := make([]string, len(t.GetTensorType().Shape.Dim))
	for i, d := range t.GetTensorType().Shape.Dim {
		switch dv := d.Value.(type) {
		case *onnxpb.TensorShapeProto_Dimension_DimValue:
			out[i] = strconv.FormatInt(dv.DimValue, 10)
		case *onnxpb.TensorShapeProto_Dimension_DimParam:
			out[i] = dv.DimParam
		default:
			out[i] = "?"
		}
	}
	return out
}

// TensorType makes a tensor TypeProto with static dims (negative dims become unknown).
func TensorType(elem int32, dims []int64) *onnxpb.TypeProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d >= 0 {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: elem, Shape: shape}}}
}

// SymTensorType makes a tensor TypeProto whose dims are numbers or symbolic names.
func SymTensorType(elem int32, dims []string) *onnxpb.TypeProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if v, err := strconv.ParseInt(d, 10, 64); err == nil {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: v}
		} else if d != "" && d != "?" {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: elem, Shape: shape}}}
}

// Fresh returns a value or node name not used in the graph, derived from base.
func (g *Graph) Fresh(base string) string {
	if g.Scope != "" {
		base = g.Scope + "/" + base
	}
	if !g.used[base] {
		g.used[base] = true
		return base
	}
	for {
		g.seq++
		s := base + "_" + strconv.Itoa(g.seq)
		if !g.used[s] {
			g.used[s] = true
			return s
		}
	}
}

// freshRaw is Fresh without the scope prefix (for names derived from scoped ones).
func (g *Graph) freshRaw(base string) string {
	saved := g.Scope
	g.Scope = ""
	defer func() { g.Scope = saved }()
	return g.Fresh(base)
}

// Reserve marks a name as used (for names chosen by the caller, e.g. PEFT parameter names).
func (g *Graph) Reserve(name string) error {
	if g.used[name] {
		return fmt.Errorf("name %q already exists in the graph", name)
	}
	g.used[name] = true
	return nil
}

// Attr is a node attribute under construction.
type Attr = *onnxpb.AttributeProto

// AInt, AInts, AFloat, AString, ATensor build attributes.
func AInt(name string, v int64) Attr {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INT, I: v}
}
func AInts(name string, v ...int64) Attr {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_INTS, Ints: v}
}
func AFloat(name string, v float32) Attr {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_FLOAT, F: v}
}
func AString(name, v string) Attr {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_STRING, S: []byte(v)}
}
func ATensor(name string, t *onnxpb.TensorProto) Attr {
	return &onnxpb.AttributeProto{Name: name, Type: onnxpb.AttributeProto_TENSOR, T: t}
}

// NodeSpec describes a node to add.
type NodeSpec struct {
	Op, Domain string
	Inputs     []string
	NOut       int // number of outputs (default 1)
	Attrs      []Attr
	Name       string // base name; defaults to the op type
}

// Add appends a node and returns its output names.
func (g *Graph) Add(s NodeSpec) []string {
	if s.NOut == 0 {
		s.NOut = 1
	}
	base := s.Name
	if base == "" {
		base = s.Op
	}
	n := &onnxpb.NodeProto{OpType: s.Op, Domain: s.Domain, Input: s.Inputs, Name: g.Fresh(base), Attribute: s.Attrs}
	for i := 0; i < s.NOut; i++ {
		o := g.freshRaw(n.Name + "_out" + strconv.Itoa(i))
		n.Output = append(n.Output, o)
		g.prod[o] = n
	}
	g.P.Node = append(g.P.Node, n)
	g.inferTypes(n)
	return n.Output
}

// Op appends a single-output node of the default domain and returns its output.
func (g *Graph) Op(op string, inputs []string, attrs ...Attr) string {
	return g.Add(NodeSpec{Op: op, Inputs: inputs, Attrs: attrs})[0]
}

// AddInitializer adds an initializer (its name must be fresh) and records its type.
func (g *Graph) AddInitializer(t *onnxpb.TensorProto) string {
	if g.inits[t.Name] != nil || g.prod[t.Name] != nil {
		panic(fmt.Sprintf("initializer %q collides with an existing value", t.Name))
	}
	g.used[t.Name] = true
	g.P.Initializer = append(g.P.Initializer, t)
	g.inits[t.Name] = t
	g.types[t.Name] = TensorType(t.DataType, t.Dims)
	return t.Name
}

// RemoveInitializer drops an initializer (used when a pass replaces a weight).
func (g *Graph) RemoveInitializer(name string) {
	out := g.P.Initializer[:0]
	for _, t := range g.P.Initializer {
		if t.Name != name {
			out = append(out, t)
		}
	}
	g.P.Initializer = out
	delete(g.inits, name)
}

// ConstI64 adds an INT64 constant initializer and returns its name. Identical constants
// are shared.
func (g *Graph) ConstI64(v ...int64) string {
	key := "const_i64_" + joinInts(v)
	if g.inits[key] != nil {
		return key
	}
	return g.AddInitializer(Int64Tensor(key, []int64{int64(len(v))}, v))
}

// ScalarI64 adds a 0-d INT64 constant.
func (g *Graph) ScalarI64(v int64) string {
	key := "const_i64_scalar_" + strconv.FormatInt(v, 10)
	if g.inits[key] != nil {
		return key
	}
	return g.AddInitializer(Int64Tensor(key, nil, []int64{v}))
}

// ConstF adds a 0-d floating-point constant of type dt (shared when identical).
func (g *Graph) ConstF(dt int32, v float32) string {
	key := "const_" + strings.ToLower(DTypeName(dt)) + "_" + strconv.FormatFloat(float64(v), 'g', -1, 32)
	if g.inits[key] != nil {
		return key
	}
	return g.AddInitializer(FloatTensor(key, dt, nil, []float32{v}))
}

// ConstLikeF returns a 0-d constant with like's element type (CastLike when the type is
// not recorded).
func (g *Graph) ConstLikeF(v float32, like string) string {
	if dt := g.ElemType(like); dt != 0 {
		return g.ConstF(dt, v)
	}
	return g.Op("CastLike", []string{g.ConstF(Float, v), like})
}

func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strings.ReplaceAll(strconv.FormatInt(x, 10), "-", "m")
	}
	return strings.Join(s, "_")
}

// AttrInt returns an INT attribute of n, or def.
func AttrInt(n *onnxpb.NodeProto, name string, def int64) int64 {
	for _, a := range n.Attribute {
		if a.Name == name {
			return a.I
		}
	}
	return def
}

// AttrFloat returns a FLOAT attribute of n, or def.
func AttrFloat(n *onnxpb.NodeProto, name string, def float32) float32 {
	for _, a := range n.Attribute {
		if a.Name == name {
			return a.F
		}
	}
	return def
}

// AttrInts returns an INTS attribute of n (nil, false when absent).
func AttrInts(n *onnxpb.NodeProto, name string) ([]int64, bool) {
	for _, a := range n.Attribute {
		if a.Name == name {
			return a.Ints, true
		}
	}
	return nil, false
}

// AttrString returns a STRING attribute of n, or def.
func AttrString(n *onnxpb.NodeProto, name, def string) string {
	for _, a := range n.Attribute {
		if a.Name == name {
			return string(a.S)
		}
	}
	return def
}

// HasAttr reports whether n carries an attribute.
func HasAttr(n *onnxpb.NodeProto, name string) bool {
	for _, a := range n.Attribute {
		if a.Name == name {
			return true
		}
	}
	return false
}

// ConstInts returns the value of v when it is an integer initializer or the output of a
// Constant node, so passes can read static starts/axes/shapes.
func (g *Graph) ConstInts(v string) ([]int64, bool) {
	if t := g.inits[v]; t != nil {
		x, err := g.M.Int64s(t)
		return x, err == nil
	}
	if n := g.prod[v]; n != nil && n.OpType == "Constant" && n.Domain == "" {
		for _, a := range n.Attribute {
			switch a.Name {
			case "value":
				x, err := g.M.Int64s(a.T)
				return x, err == nil
			case "value_ints":
				return a.Ints, true
			case "value_int":
				return []int64{a.I}, true
			}
		}
	}
	return nil, false
}

// ConstFloats is ConstInts for floating-point constants.
func (g *Graph) ConstFloats(v string) ([]float32, bool) {
	if t := g.inits[v]; t != nil {
		x, err := g.M.Floats(t)
		return x, err == nil
	}
	if n := g.prod[v]; n != nil && n.OpType == "Constant" && n.Domain == "" {
		for _, a := range n.Attribute {
			switch a.Name {
			case "value":
				x, err := g.M.Floats(a.T)
				return x, err == nil
			case "value_float":
				return []float32{a.F}, true
			case "value_floats":
				return a.Floats, true
			}
		}
	}
	return nil, false
}

// Consumers maps every value to the nodes reading it (computed on demand: passes rewrite
// freely and a stale consumer index would be worse than the cost of rebuilding it).
func (g *Graph) Consumers() map[string][]*onnxpb.NodeProto {
	c := map[string][]*onnxpb.NodeProto{}
	for _, n := range g.P.Node {
		for _, in := range NodeInputs(n) {
			if in != "" {
				c[in] = append(c[in], n)
			}
		}
	}
	return c
}

// ReplaceUses rewires every reader of old (nodes and graph outputs) to read new instead,
// except the nodes listed in skip.
func (g *Graph) ReplaceUses(old, new string, skip ...*onnxpb.NodeProto) {
	skipSet := map[*onnxpb.NodeProto]bool{}
	for _, n := range skip {
		skipSet[n] = true
	}
	for _, n := range g.P.Node {
		if skipSet[n] {
			continue
		}
		for i, in := range n.Input {
			if in == old {
				n.Input[i] = new
			}
		}
	}
	for _, o := range g.P.Output {
		if o.Name == old {
			o.Name = new
		}
	}
}

// TopoSort orders the nodes so that every node follows its producers; it fails on cycles
// and on inputs that nothing produces.
func (g *Graph) TopoSort() error {
	if g.isSorted() {
		return nil // keep the producer's order (it carries module order)
	}
	avail := map[string]bool{"": true}
	for _, t := range g.P.Initializer {
		avail[t.Name] = true
	}
	for _, vi := range g.P.Input {
		avail[vi.Name] = true
	}
	pending := append([]*onnxpb.NodeProto(nil), g.P.Node...)
	out := make([]*onnxpb.NodeProto, 0, len(pending))
	// Kahn's algorithm with a waiting list per missing value keeps this linear.
	waiting := map[string][]int{}
	missing := make([]int, len(pending))
	var ready []int
	for i, n := range pending {
		seen := map[string]bool{}
		for _, in := range NodeInputs(n) {
			if !avail[in] && !seen[in] {
				seen[in] = true
				missing[i]++
				waiting[in] = append(waiting[in], i)
			}
		}
		if missing[i] == 0 {
			ready = append(ready, i)
		}
	}
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		n := pending[i]
		out = append(out, n)
		for _, o := range n.Output {
			if o == "" || avail[o] {
				continue
			}
			avail[o] = true
			for _, j := range waiting[o] {
				missing[j]--
				if missing[j] == 0 {
					ready = append(ready, j)
				}
			}
		}
	}
	if len(out) != len(pending) {
		var stuck []string
		for i, n := range pending {
			if missing[i] > 0 {
				for _, in := range NodeInputs(n) {
					if !avail[in] {
						stuck = append(stuck, fmt.Sprintf("node %q (%s) input %q", n.Name, n.OpType, in))
						break
					}
				}
			}
			if len(stuck) >= 3 {
				break
			}
		}
		return fmt.Errorf("graph has values nobody produces or a cycle: %s", strings.Join(stuck, "; "))
	}
	g.P.Node = out
	return nil
}

// NodeInputs returns n's inputs including the outer-scope values its subgraphs (Loop,
// If, Scan bodies) read implicitly: ordering and liveness must count those too.
func NodeInputs(n *onnxpb.NodeProto) []string {
	var sub []string
	for _, a := range n.Attribute {
		if a.G != nil {
			sub = append(sub, outerRefs(a.G)...)
		}
		for _, sg := range a.Graphs {
			sub = append(sub, outerRefs(sg)...)
		}
	}
	if len(sub) == 0 {
		return n.Input
	}
	return append(append([]string(nil), n.Input...), sub...)
}

// outerRefs lists the values a subgraph reads from enclosing scopes.
func outerRefs(gp *onnxpb.GraphProto) []string {
	local := map[string]bool{"": true}
	for _, vi := range gp.Input {
		local[vi.Name] = true
	}
	for _, t := range gp.Initializer {
		local[t.Name] = true
	}
	for _, n := range gp.Node {
		for _, o := range n.Output {
			local[o] = true
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, n := range gp.Node {
		for _, in := range NodeInputs(n) {
			if !local[in] && !seen[in] {
				seen[in] = true
				out = append(out, in)
			}
		}
	}
	for _, o := range gp.Output {
		if !local[o.Name] && !seen[o.Name] {
			seen[o.Name] = true
			out = append(out, o.Name)
		}
	}
	return out
}

func (g *Graph) isSorted() bool {
	avail := map[string]bool{"": true}
	for _, t := range g.P.Initializer {
		avail[t.Name] = true
	}
	for _, vi := range g.P.Input {
		avail[vi.Name] = true
	}
	for _, n := range g.P.Node {
		for _, in := range NodeInputs(n) {
			if !avail[in] {
				return false
			}
		}
		for _, o := range n.Output {
			avail[o] = true
		}
	}
	return true
}

// Prune removes nodes whose outputs reach no graph output, and initializers and value_info
// nobody reads.
func (g *Graph) Prune() {
	live := map[string]bool{}
	for _, o := range g.P.Output {
		live[o.Name] = true
	}
	keep := make([]bool, len(g.P.Node))
	for i := len(g.P.Node) - 1; i >= 0; i-- {
		n := g.P.Node[i]
		for _, o := range n.Output {
			if live[o] {
				keep[i] = true
				break
			}
		}
		if keep[i] {
			for _, in := range NodeInputs(n) {
				live[in] = true
			}
		}
	}
	nodes := g.P.Node[:0]
	for i, n := range g.P.Node {
		if keep[i] {
			nodes = append(nodes, n)
		}
	}
	g.P.Node = nodes
	inits := g.P.Initializer[:0]
	for _, t := range g.P.Initializer {
		if live[t.Name] {
			inits = append(inits, t)
		}
	}
	g.P.Initializer = inits
	vis := g.P.ValueInfo[:0]
	for _, v := range g.P.ValueInfo {
		if live[v.Name] && g.prod[v.Name] != nil {
			vis = append(vis, v)
		}
	}
	g.P.ValueInfo = vis
	g.Reindex()
}

// OpCounts returns "Op: count" for the graph, sorted, for reports and goldens.
func (g *Graph) OpCounts() []string {
	c := map[string]int{}
	for _, n := range g.P.Node {
		k := n.OpType
		if n.Domain != "" {
			k = n.Domain + "." + k
		}
		c[k]++
	}
	out := make([]string, 0, len(c))
	for k, v := range c {
		out = append(out, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(out)
	return out
}

// MetaValue returns a node metadata_props value.
func MetaValue(n *onnxpb.NodeProto, key string) string {
	for _, kv := range n.MetadataProps {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}
