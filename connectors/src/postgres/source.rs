//! The `postgres` source (see below).
