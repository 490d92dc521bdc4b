//! `postern-showq`: see `postern_queue::showq`.

fn main() {
    std::process::exit(postern_queue::showq::run());
}
