//! `postern-master`: see the `postern_master::supervisor` module for the manual.

fn main() {
    std::process::exit(postern_master::supervisor::main());
}
