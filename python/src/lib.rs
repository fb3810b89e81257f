//! `smyrf._smyrf`: the Python binding of the smyrf crate.
//!
//! Tensors arrive either as numpy arrays or, from `smyrf.torch`, as descriptors of live
//! tensors (data pointer, element type, sizes, element strides and the storage's byte
//! range). Both become a [`Desc`], which is checked here (strides, alignment, bounds,
//! overlap of the output with the inputs) before any slice is made; then the views are
//! built from the caller's memory with no copy and the library runs with the GIL released.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use half::{bf16, f16};
use numpy::npyffi::flags::NPY_ARRAY_WRITEABLE;
use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use smyrf::{CallOptions, Config, DType, Error, Isa, KvIndex, Plan, Shape, SinkSelection};
use smyrf::{TensorView, TensorViewMut};

/// The library's refusal as the Python exception that fits it.
fn py_err(err: Error) -> PyErr {
    match err {
        Error::OutOfMemory { .. } => PyMemoryError::new_err(err.to_string()),
        _ => PyValueError::new_err(err.to_string()),
    }
}

/// One tensor of a call: where its elements are and how they are laid out. `len` counts the
/// elements from `addr` to one past the last one the shape reaches.
#[derive(Clone, Copy)]
struct Desc {
    addr: usize,
    dtype: DType,
    shape: Shape,
    len: usize,
}

impl Desc {
    /// The byte range `[start, end)` the view spans.
    fn span(&self) -> (usize, usize) {
        (self.addr, self.addr + self.len * self.dtype.size())
    }
}

/// Sizes and element strides of a 4-D tensor as a `Shape`, refusing what the library's
/// views cannot express. A stride of an axis of size 1 is never used, so it is taken as 0
/// (numpy and torch put arbitrary values there).
fn shape_of(name: &'static str, sizes: &[usize], strides: &[isize]) -> PyResult<(Shape, usize)> {
    if sizes.len() != 4 || strides.len() != 4 {
        return Err(PyValueError::new_err(format!(
            "{name} must have 4 dimensions [B, H, N, D], got {}",
            sizes.len()
        )));
    }
    let mut st = [0usize; 4];
    for axis in 0..4 {
        if sizes[axis] == 1 {
            continue;
        }
        if strides[axis] < 0 {
            return Err(PyValueError::new_err(format!(
                "{name}: negative strides are not supported (axis {axis} has stride {})",
                strides[axis]
            )));
        }
        st[axis] = strides[axis] as usize;
    }
    if sizes[3] > 1 && st[3] != 1 {
        return Err(PyValueError::new_err(format!(
            "{name}: the last axis must be contiguous (its stride is {} elements, not 1)",
            strides[3]
        )));
    }
    let shape = Shape {
        batch: sizes[0],
        heads: sizes[1],
        seq_len: sizes[2],
        dim: sizes[3],
        batch_stride: st[0],
        head_stride: st[1],
        seq_stride: st[2],
    };
    let len = shape.required_len(name).map_err(py_err)?;
    Ok((shape, len))
}

fn check_alignment(name: &str, addr: usize, dtype: DType) -> PyResult<()> {
    if !addr.is_multiple_of(dtype.size()) {
        return Err(PyValueError::new_err(format!(
            "{name}: data is not aligned to its element size ({} bytes)",
            dtype.size()
        )));
    }
    Ok(())
}

fn dtype_named(name: &str, dtype: &str) -> PyResult<DType> {
    match dtype {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::Bf16),
        other => Err(PyTypeError::new_err(format!(
            "{name}: element type {other} is not supported (f32, f16 or bf16)"
        ))),
    }
}

/// A numpy array as a `Desc`; `writable` asks that numpy lets it be written.
fn describe_array(
    name: &'static str,
    array: &Bound<'_, PyUntypedArray>,
    writable: bool,
) -> PyResult<Desc> {
    let descr = array.dtype();
    let itemsize = descr.itemsize();
    // A byte-swapped array has the kind and size of a float but not its bits.
    let native = descr.is_native_byteorder() != Some(false);
    let dtype = match (descr.kind(), itemsize) {
        _ if !native => {
            return Err(PyTypeError::new_err(format!(
                "{name}: dtype {} is not in native byte order",
                descr.str()?
            )))
        }
        (b'f', 4) => DType::F32,
        (b'f', 2) => DType::F16,
        // ml_dtypes' bfloat16, the usual way numpy holds bf16.
        (b'V', 2) if descr.typeobj().name()? == "bfloat16" => DType::Bf16,
        _ => {
            return Err(PyTypeError::new_err(format!(
                "{name}: dtype {} is not supported (float32 or float16)",
                descr.str()?
            )))
        }
    };
    let ptr = array.as_array_ptr();
    // SAFETY: `ptr` is the live array object `array` borrows; reading its header fields
    // (data pointer, flags) does not touch its elements.
    let (addr, flags) = unsafe { ((*ptr).data as usize, (*ptr).flags) };
    if writable && flags & NPY_ARRAY_WRITEABLE == 0 {
        return Err(PyValueError::new_err(format!(
            "{name}: the array is read-only"
        )));
    }
    let mut strides = Vec::with_capacity(4);
    for &s in array.strides() {
        if s % itemsize as isize != 0 {
            return Err(PyValueError::new_err(format!(
                "{name}: stride of {s} bytes is not a multiple of the element size"
            )));
        }
        strides.push(s / itemsize as isize);
    }
    let (shape, len) = shape_of(name, array.shape(), &strides)?;
    check_alignment(name, addr, dtype)?;
    Ok(Desc {
        addr,
        dtype,
        shape,
        len,
    })
}

/// A tensor descriptor from `smyrf.torch`: `(data_ptr, dtype, sizes, strides,
/// storage_start, storage_end)`, strides in elements, the storage range in bytes.
fn describe_raw(name: &'static str, raw: &Bound<'_, PyTuple>) -> PyResult<Desc> {
    type Raw = (usize, String, Vec<usize>, Vec<isize>, usize, usize);
    let (addr, dtype, sizes, strides, lo, hi): Raw = raw.extract()?;
    let dtype = dtype_named(name, &dtype)?;
    let (shape, len) = shape_of(name, &sizes, &strides)?;
    check_alignment(name, addr, dtype)?;
    // Every element the view reaches must lie inside the storage it was taken from.
    let inside = len
        .checked_mul(dtype.size())
        .and_then(|bytes| addr.checked_add(bytes))
        .is_some_and(|end| addr >= lo && end <= hi);
    if !inside {
        return Err(PyValueError::new_err(format!(
            "{name}: sizes and strides reach outside the tensor's storage"
        )));
    }
    Ok(Desc {
        addr,
        dtype,
        shape,
        len,
    })
}

fn describe(name: &'static str, obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Desc> {
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        return describe_array(name, array, writable);
    }
    if let Ok(raw) = obj.cast::<PyTuple>() {
        return describe_raw(name, raw);
    }
    Err(PyTypeError::new_err(format!(
        "{name}: expected a numpy array, got {}",
        obj.get_type().name()?
    )))
}

/// Refuses an output whose bytes overlap an input's: the library reads the inputs while it
/// writes the output, and a `&mut` slice must not alias a `&` one.
fn check_disjoint(out: &Desc, inputs: [(&str, &Desc); 3]) -> PyResult<()> {
    let (o0, o1) = out.span();
    for (name, input) in inputs {
        let (i0, i1) = input.span();
        if o0 < i1 && i0 < o1 {
            return Err(PyValueError::new_err(format!(
                "out overlaps {name}: the output must not share memory with an input"
            )));
        }
    }
    Ok(())
}

/// A read-only view of any element type.
enum AnyIn<'a> {
    F32(TensorView<'a, f32>),
    F16(TensorView<'a, f16>),
    Bf16(TensorView<'a, bf16>),
}

/// A writable view of any element type.
enum AnyOut<'a> {
    F32(TensorViewMut<'a, f32>),
    F16(TensorViewMut<'a, f16>),
    Bf16(TensorViewMut<'a, bf16>),
}

/// Builds the read-only view of a checked descriptor.
///
/// # Safety
/// `d` must describe `d.len` initialised elements of `d.dtype` at `d.addr`, aligned, that
/// stay alive and are not written through any other path while the view is used.
unsafe fn view_in<'a>(d: &Desc) -> Result<AnyIn<'a>, Error> {
    // SAFETY: the caller's contract; f16 and bf16 are plain 2-byte types, so any bits are
    // valid values.
    unsafe {
        Ok(match d.dtype {
            DType::F32 => AnyIn::F32(TensorView::new(
                std::slice::from_raw_parts(d.addr as *const f32, d.len),
                d.shape,
            )?),
            DType::F16 => AnyIn::F16(TensorView::new(
                std::slice::from_raw_parts(d.addr as *const f16, d.len),
                d.shape,
            )?),
            _ => AnyIn::Bf16(TensorView::new(
                std::slice::from_raw_parts(d.addr as *const bf16, d.len),
                d.shape,
            )?),
        })
    }
}

/// Builds the writable view of a checked descriptor.
///
/// # Safety
/// As [`view_in`], and no other reference to those elements may exist while the view is
/// used.
unsafe fn view_out<'a>(d: &Desc) -> Result<AnyOut<'a>, Error> {
    // SAFETY: the caller's contract, as in `view_in`.
    unsafe {
        Ok(match d.dtype {
            DType::F32 => AnyOut::F32(TensorViewMut::new(
                std::slice::from_raw_parts_mut(d.addr as *mut f32, d.len),
                d.shape,
            )?),
            DType::F16 => AnyOut::F16(TensorViewMut::new(
                std::slice::from_raw_parts_mut(d.addr as *mut f16, d.len),
                d.shape,
            )?),
            _ => AnyOut::Bf16(TensorViewMut::new(
                std::slice::from_raw_parts_mut(d.addr as *mut bf16, d.len),
                d.shape,
            )?),
        })
    }
}

macro_rules! each_in {
    ($view:expr, $name:ident => $body:expr) => {
        match $view {
            AnyIn::F32($name) => $body,
            AnyIn::F16($name) => $body,
            AnyIn::Bf16($name) => $body,
        }
    };
}

macro_rules! each_out {
    ($view:expr, $name:ident => $body:expr) => {
        match $view {
            AnyOut::F32(mut $name) => $body,
            AnyOut::F16(mut $name) => $body,
            AnyOut::Bf16(mut $name) => $body,
        }
    };
}

/// The optional inputs of a call, owned so they can cross into the GIL-free section.
struct Extras {
    key_mask: Option<Vec<u8>>,
    key_lengths: Option<Vec<u32>>,
    head_sinks: Option<Vec<f32>>,
    causal: bool,
    query_offset: Option<usize>,
}

impl Extras {
    fn new(
        key_mask: Option<PyReadonlyArray1<'_, u8>>,
        key_lengths: Option<Vec<i64>>,
        head_sinks: Option<PyReadonlyArray1<'_, f32>>,
        nk: usize,
        causal: bool,
        query_offset: Option<i64>,
    ) -> PyResult<Extras> {
        let query_offset = match query_offset {
            None => None,
            Some(offset) => Some(usize::try_from(offset).map_err(|_| {
                PyValueError::new_err(format!("query_offset must be non-negative, got {offset}"))
            })?),
        };
        let key_lengths = match key_lengths {
            None => None,
            Some(lengths) => {
                let mut out = Vec::with_capacity(lengths.len());
                for (batch, &length) in lengths.iter().enumerate() {
                    // The Rust API takes u32 lengths; a negative one gets the message the
                    // library gives C callers.
                    if length < 0 || length > nk as i64 {
                        return Err(py_err(Error::KeyLength { batch, length, nk }));
                    }
                    out.push(length as u32);
                }
                Some(out)
            }
        };
        Ok(Extras {
            key_mask: key_mask.map(|m| m.as_array().to_vec()),
            key_lengths,
            head_sinks: head_sinks.map(|s| s.as_array().to_vec()),
            causal,
            query_offset,
        })
    }

    fn options<'a>(&'a self, lse: Option<&'a mut [f32]>) -> CallOptions<'a> {
        let mut options = CallOptions::new();
        if let Some(mask) = &self.key_mask {
            options = options.key_mask(mask);
        }
        if let Some(lengths) = &self.key_lengths {
            options = options.key_lengths(lengths);
        }
        if let Some(sinks) = &self.head_sinks {
            options = options.head_sinks(sinks);
        }
        if let Some(lse) = lse {
            options = options.lse(lse);
        }
        // Fields, not the setters: an offset without `causal` gets the library's refusal.
        options.causal = self.causal;
        options.query_offset = self.query_offset;
        options
    }
}

/// The `[B, Hq, Nq]` lse output of a call, when asked for.
fn lse_buffer(wanted: bool, b: usize, hq: usize, nq: usize) -> PyResult<Option<Vec<f32>>> {
    if !wanted {
        return Ok(None);
    }
    let n = b
        .checked_mul(hq)
        .and_then(|x| x.checked_mul(nq))
        .ok_or_else(|| PyValueError::new_err("lse: size overflows"))?;
    Ok(Some(vec![0.0f32; n]))
}

/// A compiled SMYRF plan (`smyrf.Plan` wraps it).
#[pyclass(name = "Plan", module = "smyrf._smyrf", frozen)]
struct PyPlan {
    plan: Plan,
}

fn isa_name(isa: Option<Isa>) -> &'static str {
    isa.map_or("auto", Isa::name)
}

fn sink_selection_name(s: SinkSelection) -> &'static str {
    match s {
        SinkSelection::MeanQuery => "mean_query",
        _ => "first",
    }
}

/// Extracts a config value, turning pyo3's type and range errors into messages that name
/// the field.
fn field<'py, T: FromPyObjectOwned<'py>>(
    key: &str,
    value: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<T> {
    value.extract::<T>().map_err(|_| {
        let msg = format!(
            "{key} must be {what}, got {}",
            value
                .repr()
                .map_or_else(|_| "?".to_string(), |r| r.to_string())
        );
        if value.is_instance_of::<pyo3::types::PyInt>()
            || value.is_instance_of::<pyo3::types::PyFloat>()
        {
            PyValueError::new_err(msg)
        } else {
            PyTypeError::new_err(msg)
        }
    })
}

/// Applies keyword overrides to a config; an unknown name is a TypeError, as for any Python
/// call.
fn apply_overrides(mut config: Config, overrides: Option<&Bound<'_, PyDict>>) -> PyResult<Config> {
    let Some(overrides) = overrides else {
        return Ok(config);
    };
    const INT: &str = "a non-negative integer";
    for (key, value) in overrides.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "n_hashes" => config.n_hashes = field(&key, &value, INT)?,
            "q_cluster_size" => config.q_cluster_size = field(&key, &value, INT)?,
            "k_cluster_size" => {
                config.k_cluster_size = field(&key, &value, "None or a positive integer")?
            }
            "scale" => config.scale = field(&key, &value, "None or a float")?,
            "seed" => config.seed = field(&key, &value, "an integer in 0..2**64")?,
            "num_threads" => config.num_threads = field(&key, &value, INT)?,
            "isa" => {
                let name: Option<String> = field(&key, &value, "a tier name")?;
                config.isa = match name.as_deref().map(str::trim) {
                    None | Some("auto") | Some("") => None,
                    Some(name) => Some(Isa::from_name(name).ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "isa {name:?} names no tier (auto, portable, avx2, avx512 or neon)"
                        ))
                    })?),
                }
            }
            "n_sinks" => config.n_sinks = field(&key, &value, INT)?,
            "sink_selection" => {
                let name: String = field(&key, &value, "'first' or 'mean_query'")?;
                config.sink_selection = match name.as_str() {
                    "first" => SinkSelection::First,
                    "mean_query" => SinkSelection::MeanQuery,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "sink_selection {other:?} is not 'first' or 'mean_query'"
                        )))
                    }
                }
            }
            "window" => config.window = field(&key, &value, INT)?,
            "n_samples" => config.n_samples = field(&key, &value, INT)?,
            "sample_group" => config.sample_group = field(&key, &value, INT)?,
            "n_selected" => config.n_selected = field(&key, &value, INT)?,
            "select_dims" => config.select_dims = field(&key, &value, INT)?,
            "n_blocks" => config.n_blocks = field(&key, &value, INT)?,
            "block_size" => config.block_size = field(&key, &value, INT)?,
            "block_tile" => config.block_tile = field(&key, &value, INT)?,
            "bf16_exact" => {
                if !value.is_instance_of::<pyo3::types::PyBool>() {
                    return Err(PyTypeError::new_err(format!(
                        "bf16_exact must be a bool, got {}",
                        value.repr()?
                    )));
                }
                config.bf16_exact = value.extract()?
            }
            other => {
                return Err(PyTypeError::new_err(format!(
                    "Plan() got an unexpected keyword argument '{other}'"
                )))
            }
        }
    }
    Ok(config)
}

fn build_plan(config: Config, head_dim: usize) -> PyResult<PyPlan> {
    Ok(PyPlan {
        plan: Plan::new(config, head_dim).map_err(py_err)?,
    })
}

impl PyPlan {
    /// One call, SMYRF or dense: describes and checks the tensors, then runs the library
    /// without the GIL. Returns the lse, `[B, Hq, Nq]`, when asked for.
    #[allow(clippy::too_many_arguments)]
    fn call<'py>(
        &self,
        py: Python<'py>,
        dense: bool,
        q: &Bound<'py, PyAny>,
        k: &Bound<'py, PyAny>,
        v: &Bound<'py, PyAny>,
        out: &Bound<'py, PyAny>,
        key_mask: Option<PyReadonlyArray1<'py, u8>>,
        key_lengths: Option<Vec<i64>>,
        head_sinks: Option<PyReadonlyArray1<'py, f32>>,
        return_lse: bool,
        causal: bool,
        query_offset: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let qd = describe("q", q, false)?;
        let kd = describe("k", k, false)?;
        let vd = describe("v", v, false)?;
        let od = describe("out", out, true)?;
        check_disjoint(&od, [("q", &qd), ("k", &kd), ("v", &vd)])?;
        let extras = Extras::new(
            key_mask,
            key_lengths,
            head_sinks,
            kd.shape.seq_len,
            causal,
            query_offset,
        )?;
        let (b, hq, nq) = (qd.shape.batch, qd.shape.heads, qd.shape.seq_len);
        let mut lse = lse_buffer(return_lse, b, hq, nq)?;
        let plan = &self.plan;
        let result = py.detach(|| {
            let options = extras.options(lse.as_deref_mut());
            // SAFETY: each descriptor was checked above: non-negative strides, a
            // contiguous last axis, aligned data, and `len` elements that lie inside the
            // array (numpy's own layout invariant) or inside the tensor's storage (checked
            // in `describe_raw`). The Python caller keeps the arrays alive for the whole
            // call (they are its arguments). The output's byte range is disjoint from
            // every input's, so the one `&mut` slice aliases no `&` slice. As with any
            // extension that releases the GIL, Python code on another thread must not
            // write these arrays during the call.
            let (qv, kv, vv, ov) =
                unsafe { (view_in(&qd), view_in(&kd), view_in(&vd), view_out(&od)) };
            let (qv, kv, vv, ov) = (qv?, kv?, vv?, ov?);
            each_in!(qv, qv => each_in!(kv, kv => each_in!(vv, vv => each_out!(ov, ov => {
                if dense {
                    plan.dense_attention_with(&qv, &kv, &vv, &mut ov, options)
                } else {
                    plan.attention_with(&qv, &kv, &vv, &mut ov, options)
                }
            }))))
        });
        result.map_err(py_err)?;
        match lse {
            None => Ok(None),
            Some(lse) => Ok(Some(
                PyArray1::from_vec(py, lse).reshape([b, hq, nq])?.into_any(),
            )),
        }
    }
}

#[pymethods]
impl PyPlan {
    /// `Plan(head_dim, config)`: `config` maps `Config` field names to values.
    #[new]
    #[pyo3(signature = (head_dim, config=None))]
    fn new(head_dim: usize, config: Option<&Bound<'_, PyDict>>) -> PyResult<PyPlan> {
        build_plan(apply_overrides(Config::default(), config)?, head_dim)
    }

    /// The design §8 hybrid preset for a key budget, with overrides.
    #[staticmethod]
    #[pyo3(signature = (head_dim, key_budget, config=None))]
    fn hybrid(
        head_dim: usize,
        key_budget: usize,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyPlan> {
        build_plan(
            apply_overrides(Config::hybrid(key_budget), config)?,
            head_dim,
        )
    }

    /// The causal preset for a key budget, with overrides.
    #[staticmethod]
    #[pyo3(signature = (head_dim, key_budget, config=None))]
    fn causal(
        head_dim: usize,
        key_budget: usize,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyPlan> {
        build_plan(
            apply_overrides(Config::causal(key_budget), config)?,
            head_dim,
        )
    }

    #[getter]
    fn head_dim(&self) -> usize {
        self.plan.head_dim()
    }

    /// The tier the plan runs.
    #[getter]
    fn isa(&self) -> &'static str {
        self.plan.isa().name()
    }

    /// The scale the plan applies (the configured one, or 1/sqrt(head_dim)).
    #[getter]
    fn effective_scale(&self) -> f32 {
        self.plan.scale()
    }

    /// Every config field by name, in the form the constructor takes.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.plan.config();
        let d = PyDict::new(py);
        d.set_item("n_hashes", c.n_hashes)?;
        d.set_item("q_cluster_size", c.q_cluster_size)?;
        d.set_item("k_cluster_size", c.k_cluster_size)?;
        d.set_item("scale", c.scale)?;
        d.set_item("seed", c.seed)?;
        d.set_item("num_threads", c.num_threads)?;
        d.set_item("isa", isa_name(c.isa))?;
        d.set_item("n_sinks", c.n_sinks)?;
        d.set_item("sink_selection", sink_selection_name(c.sink_selection))?;
        d.set_item("window", c.window)?;
        d.set_item("n_samples", c.n_samples)?;
        d.set_item("sample_group", c.sample_group)?;
        d.set_item("n_selected", c.n_selected)?;
        d.set_item("select_dims", c.select_dims)?;
        d.set_item("n_blocks", c.n_blocks)?;
        d.set_item("block_size", c.block_size)?;
        d.set_item("block_tile", c.block_tile)?;
        d.set_item("bf16_exact", c.bf16_exact)?;
        Ok(d)
    }

    /// SMYRF attention into `out`; see `smyrf.Plan.attention`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (q, k, v, out, key_mask=None, key_lengths=None, head_sinks=None, return_lse=false, causal=false, query_offset=None))]
    fn attention<'py>(
        &self,
        py: Python<'py>,
        q: &Bound<'py, PyAny>,
        k: &Bound<'py, PyAny>,
        v: &Bound<'py, PyAny>,
        out: &Bound<'py, PyAny>,
        key_mask: Option<PyReadonlyArray1<'py, u8>>,
        key_lengths: Option<Vec<i64>>,
        head_sinks: Option<PyReadonlyArray1<'py, f32>>,
        return_lse: bool,
        causal: bool,
        query_offset: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.call(
            py,
            false,
            q,
            k,
            v,
            out,
            key_mask,
            key_lengths,
            head_sinks,
            return_lse,
            causal,
            query_offset,
        )
    }

    /// Exact dense attention with the plan's scale, tier and threads.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (q, k, v, out, key_mask=None, key_lengths=None, head_sinks=None, return_lse=false, causal=false, query_offset=None))]
    fn dense_attention<'py>(
        &self,
        py: Python<'py>,
        q: &Bound<'py, PyAny>,
        k: &Bound<'py, PyAny>,
        v: &Bound<'py, PyAny>,
        out: &Bound<'py, PyAny>,
        key_mask: Option<PyReadonlyArray1<'py, u8>>,
        key_lengths: Option<Vec<i64>>,
        head_sinks: Option<PyReadonlyArray1<'py, f32>>,
        return_lse: bool,
        causal: bool,
        query_offset: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.call(
            py,
            true,
            q,
            k,
            v,
            out,
            key_mask,
            key_lengths,
            head_sinks,
            return_lse,
            causal,
            query_offset,
        )
    }

    /// Decode through a KV-cache index into `out`; see `smyrf.Plan.decode`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (index, q, k, v, out, head_sinks=None, return_lse=false))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        index: PyRef<'py, PyKvIndex>,
        q: &Bound<'py, PyAny>,
        k: &Bound<'py, PyAny>,
        v: &Bound<'py, PyAny>,
        out: &Bound<'py, PyAny>,
        head_sinks: Option<PyReadonlyArray1<'py, f32>>,
        return_lse: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let qd = describe("q", q, false)?;
        let kd = describe("k", k, false)?;
        let vd = describe("v", v, false)?;
        let od = describe("out", out, true)?;
        check_disjoint(&od, [("q", &qd), ("k", &kd), ("v", &vd)])?;
        let sinks = head_sinks.map(|s| s.as_array().to_vec());
        let (b, hq, nq) = (qd.shape.batch, qd.shape.heads, qd.shape.seq_len);
        let mut lse = lse_buffer(return_lse, b, hq, nq)?;
        let (plan, index) = (&self.plan, &index.index);
        let result = py.detach(|| {
            let mut options = CallOptions::new();
            if let Some(sinks) = &sinks {
                options = options.head_sinks(sinks);
            }
            if let Some(lse) = lse.as_deref_mut() {
                options = options.lse(lse);
            }
            // SAFETY: as in `PyPlan::call`: checked descriptors of the caller's live
            // arguments, the output disjoint from every input.
            let (qv, kv, vv, ov) =
                unsafe { (view_in(&qd), view_in(&kd), view_in(&vd), view_out(&od)) };
            let (qv, kv, vv, ov) = (qv?, kv?, vv?, ov?);
            each_in!(qv, qv => each_in!(kv, kv => each_in!(vv, vv => each_out!(ov, ov => {
                plan.decode(index, &qv, &kv, &vv, &mut ov, options)
            }))))
        });
        result.map_err(py_err)?;
        match lse {
            None => Ok(None),
            Some(lse) => Ok(Some(
                PyArray1::from_vec(py, lse).reshape([b, hq, nq])?.into_any(),
            )),
        }
    }
}

/// A KV-cache index for decode calls of one plan (`smyrf.KvIndex` wraps it). Appends need
/// it to themselves: a decode running on another thread holds it borrowed, and an append
/// meanwhile is refused by PyO3's borrow check.
#[pyclass(name = "KvIndex", module = "smyrf._smyrf")]
struct PyKvIndex {
    index: KvIndex,
}

#[pymethods]
impl PyKvIndex {
    #[new]
    fn new(
        plan: PyRef<'_, PyPlan>,
        batch: usize,
        kv_heads: usize,
        capacity: usize,
    ) -> PyResult<Self> {
        Ok(PyKvIndex {
            index: KvIndex::new(&plan.plan, batch, kv_heads, capacity).map_err(py_err)?,
        })
    }

    /// Indexes each sequence's keys up to `lengths[b]`, read from the K cache `k`.
    fn append(&mut self, k: &Bound<'_, PyAny>, lengths: Vec<i64>) -> PyResult<()> {
        let kd = describe("k", k, false)?;
        let mut checked = Vec::with_capacity(lengths.len());
        for (batch, &length) in lengths.iter().enumerate() {
            let length = u32::try_from(length).map_err(|_| {
                PyValueError::new_err(format!(
                    "lengths[{batch}] = {length}: must be in 0..=4294967295"
                ))
            })?;
            checked.push(length);
        }
        // SAFETY: `describe` checked the descriptor (see `PyPlan::call`); the array is the
        // caller's argument, alive for the call, and read with the GIL held.
        let kv = unsafe { view_in(&kd) }.map_err(py_err)?;
        each_in!(kv, kv => self.index.append(&kv, &checked)).map_err(py_err)
    }

    /// Empties sequence `b`.
    fn reset(&mut self, b: usize) -> PyResult<()> {
        self.index.reset(b).map_err(py_err)
    }

    #[getter]
    fn lengths(&self) -> Vec<u32> {
        self.index.lengths().to_vec()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.index.capacity()
    }

    #[getter]
    fn memory_bytes(&self) -> usize {
        self.index.memory_bytes()
    }
}

/// The best tier of this CPU.
#[pyfunction]
fn detected_isa() -> &'static str {
    smyrf::detected_isa().name()
}

/// The tier a default plan runs: `SMYRF_ISA` when set, else the detected one.
#[pyfunction]
fn active_isa() -> PyResult<&'static str> {
    let plan = Plan::new(Config::default().num_threads(1).n_hashes(1), 1).map_err(py_err)?;
    Ok(plan.isa().name())
}

#[pymodule]
fn _smyrf(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPlan>()?;
    m.add_class::<PyKvIndex>()?;
    m.add_function(wrap_pyfunction!(detected_isa, m)?)?;
    m.add_function(wrap_pyfunction!(active_isa, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
