//! W0's per-batch work — `key = id % 10000`, `value = double(id % 1000)`, `ts = id`, then
//! `filter value > 10.0` — on 2048-row batches, with Rill's column kernels and with Arrow's
//! compute kernels. Prints ns per record for each; same data, same machine, one run.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use rill_engine::columns::{Column, Columns};
use rill_engine::expr::Expr;
use rill_engine::value::Sym;

const BATCH: usize = 2048;

fn rill(n: usize) -> (f64, usize) {
    let (key, value, ts) = (Expr::compile("id % 10000").unwrap(), Expr::compile("double(id % 1000)").unwrap(), Expr::compile("id").unwrap());
    let cond = Expr::compile("value > 10.0").unwrap();
    let (id, k, v, t) = (Sym::new("id"), Sym::new("key"), Sym::new("value"), Sym::new("ts"));
    let start = Instant::now();
    let mut kept = 0;
    for b in 0..n / BATCH {
        let offsets: Vec<u64> = (0..BATCH as u64).map(|i| (b * BATCH) as u64 + i).collect();
        let mut ids = Columns::new(offsets.clone());
        ids.set(id, Column::Int(offsets.iter().map(|&o| o as i64).collect()));
        let mut events = Columns::new(offsets);
        events.set(k, key.eval_columns(&ids).column.into_owned());
        events.set(v, value.eval_columns(&ids).column.into_owned());
        events.set(t, ts.eval_columns(&ids).column.into_owned());
        let keep = cond.eval_columns(&events);
        let Column::Bool(mask) = keep.column.into_owned() else { panic!() };
        kept += std::hint::black_box(events.select(&mask)).len();
    }
    (start.elapsed().as_secs_f64() * 1e9 / n as f64, kept)
}

fn arrow(n: usize) -> (f64, usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let (k10000, k1000) = (Int64Array::new_scalar(10000), Int64Array::new_scalar(1000));
    let ten = Float64Array::new_scalar(10.0);
    let start = Instant::now();
    let mut kept = 0;
    for b in 0..n / BATCH {
        let ids = Int64Array::from_iter_values((0..BATCH as i64).map(|i| (b * BATCH) as i64 + i));
        // Checked kernels, as Rill's (CEL integer arithmetic is checked).
        let key = arrow_arith::numeric::rem(&ids, &k10000).unwrap();
        let m = arrow_arith::numeric::rem(&ids, &k1000).unwrap();
        let value: ArrayRef = Arc::new(
            arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(&m).unary::<_, arrow_array::types::Float64Type>(|x| x as f64),
        );
        let ts: ArrayRef = Arc::new(ids);
        let batch = RecordBatch::try_new(schema.clone(), vec![key, value.clone(), ts]).unwrap();
        let mask = arrow_ord::cmp::gt(&value, &ten).unwrap();
        kept += std::hint::black_box(arrow_select::filter::filter_record_batch(&batch, &mask).unwrap()).num_rows();
    }
    (start.elapsed().as_secs_f64() * 1e9 / n as f64, kept)
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(50_000_000) / BATCH * BATCH;
    for round in 0..3 {
        let (r, rk) = rill(n);
        let (a, ak) = arrow(n);
        assert_eq!(rk, ak);
        println!("round {round}: N={n} kept={rk} rill_ns_per_record={r:.2} arrow_ns_per_record={a:.2} arrow/rill={:.2}", a / r);
    }
}
