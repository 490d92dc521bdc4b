//! `postern-qmgr`: see `postern_queue::qmgr`.

fn main() {
    std::process::exit(postern_queue::qmgr::run());
}
