//! `postern-submit`: see `postern_queue::submit`.

fn main() {
    std::process::exit(postern_queue::submit::run());
}
