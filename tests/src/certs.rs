//! A throw-away certificate authority and one server certificate it signs,
//! made by `openssl` in a temporary directory: the far side's certificate
//! in the smtp agent's TLS tests (`ca.crt`, `server.crt`, `server.key`).

use std::process::Command;

use crate::run;

/// A test CA and a server certificate, in a temporary directory.
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes the CA and a server certificate with CN `cn` and the
    /// subjectAltName `san` (openssl's syntax: `IP:127.0.0.2,DNS:relay.test`).
    pub fn make(cn: &str, san: &str) -> TestCerts {
        let dir = tempfile::tempdir().expect("tempdir");
        let openssl = |args: &[&str]| {
            let out = run(Command::new("openssl").args(args).current_dir(dir.path()));
            assert_eq!(out.code, Some(0), "openssl {args:?}: {out:?}");
        };
        std::fs::write(
            dir.path().join("leaf.ext"),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write leaf.ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=postern test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            ]
            .concat(),
        );
        let subject = format!("/CN={cn}");
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    &subject,
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        TestCerts { dir }
    }

    /// The path of `name` (`ca.crt`, `server.crt`, `server.key`).
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}
