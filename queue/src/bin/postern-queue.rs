//! `postern-queue`: see `postern_queue::admin`. Takes the instance as
//! `-c DIR` or `--queue-directory Q --data-directory D` first.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = None;
    let mut queue = None;
    let mut data = None;
    while args.len() >= 2 {
        match args[0].as_str() {
            "-c" => dir = Some(args[1].clone().into()),
            "--queue-directory" => queue = Some(args[1].clone().into()),
            "--data-directory" => data = Some(args[1].clone().into()),
            _ => break,
        }
        args.drain(..2);
    }
    let source = match (dir, queue, data) {
        (None, None, None) => postern_queue::sendmail::source(&Default::default()),
        (d, q, a) => match postern_common::server::source_from(d, q, a) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("postern-queue: {e}");
                std::process::exit(postern_common::sysexits::EX_USAGE);
            }
        },
    };
    std::process::exit(postern_queue::admin::main(&source, &args));
}
