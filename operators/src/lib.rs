//! Rill's built-in transforms.

mod aggregate;
mod filter;
mod map;

pub use aggregate::Aggregate;
pub use filter::Filter;
pub use map::Map;

use rill_engine::registry::Registry;

/// Registers `filter`, `map` and `aggregate`.
pub fn register(registry: &mut Registry) {
    registry.register_transform("filter", filter::build);
    registry.register_transform("map", map::build);
    registry.register_transform("aggregate", aggregate::build);
}

/// An ordered `name: value` map from a pipeline file (serde's maps do not keep order).
#[derive(Debug, Clone)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of `name: value`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}
