//! Rill's built-in transforms.

mod aggregate;
mod fault;
mod infer;
pub mod join;
mod keyed;
pub mod learn;
mod filter;
mod map;
mod over;
pub mod window;

pub use aggregate::Aggregate;
pub use filter::Filter;
pub use map::Map;

pub use rill_engine::config::Ordered;
use rill_engine::registry::Registry;

/// Registers the built-in transforms: `filter`, `map`, `aggregate`, `window`, `fault`, `infer`, `logistic_regression`, `over`, `join`.
pub fn register(registry: &mut Registry) {
    registry.register_transform("filter", filter::build);
    registry.register_transform("map", map::build);
    registry.register_transform("aggregate", aggregate::build);
    registry.register_transform("window", window::build);
    registry.register_transform("fault", fault::build);
    registry.register_transform("infer", infer::build);
    registry.register_transform("logistic_regression", learn::build);
    registry.register_transform("over", over::build);
    registry.register_transform("join", join::build);
}
