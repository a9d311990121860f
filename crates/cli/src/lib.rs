//! The parts of the `herald` binary other crates reuse: [`backends`], how a node is opened
//! over the store and broker its configuration names (the binary's `serve`, and
//! `herald-testing`'s in-process `TestServer`, open nodes the same way).

pub mod backends;
