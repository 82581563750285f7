//! Rill's engine: the record model, the expression language, pipeline configuration, the job
//! plan and the actor runtime that runs it.

pub mod expr;
pub mod exchange;
pub mod message;
pub mod record;
pub mod columns;
pub mod value;
pub mod config;
pub mod dead_letter;
pub mod faults;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod registry;
pub mod source;
pub mod state;
pub mod runtime;
pub mod aggregate;
pub mod time;
pub mod checkpoint;
pub mod lock;
pub mod secrets;
pub mod audit;
pub mod live;
pub mod testing;
