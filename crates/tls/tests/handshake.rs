//! A pinning client against a server certified by the cluster CA, over real sockets.

use std::sync::Arc;

use mycluster_tls::{pinned_client, ClusterCa, Pin, TlsAcceptor};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves one connection with `ca`'s certificate for `names`, echoing what it reads.
async fn serve_once(ca: &ClusterCa, names: &[String]) -> std::net::SocketAddr {
    let acceptor = TlsAcceptor::from(ca.server_config("MyCluster test", names).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(stream).await {
            let mut buf = [0u8; 5];
            if tls.read_exact(&mut buf).await.is_ok() {
                let _ = tls.write_all(&buf).await;
            }
        }
    });
    addr
}

async fn talk(addr: std::net::SocketAddr, pin: Pin, name: &str) -> std::io::Result<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pinned_client(pin).unwrap()));
    let stream = TcpStream::connect(addr).await?;
    let server = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = connector.connect(server, stream).await?;
    tls.write_all(b"hello").await?;
    let mut buf = vec![0u8; 5];
    tls.read_exact(&mut buf).await?;
    Ok(buf)
}

#[tokio::test]
async fn the_pinned_ca_is_trusted_whatever_name_was_dialled() {
    let ca = ClusterCa::generate().unwrap();
    let addr = serve_once(&ca, &["manager".into(), "127.0.0.1".into()]).await;
    // Dialled by a name the certificate does not hold (a NAT'd or published address).
    let echoed = talk(addr, ca.pin(), "somewhere.else").await.unwrap();
    assert_eq!(echoed, b"hello");
}

#[tokio::test]
async fn another_cas_manager_is_refused_before_anything_is_sent() {
    let ca = ClusterCa::generate().unwrap();
    let other = ClusterCa::generate().unwrap();
    let addr = serve_once(&other, &["127.0.0.1".into()]).await;
    let error = talk(addr, ca.pin(), "127.0.0.1").await.unwrap_err();
    assert!(
        error.to_string().contains("not from the CA the token pins"),
        "{error}"
    );
}

#[test]
fn a_saved_ca_loads_back_and_signs_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (made, created) = ClusterCa::load_or_create(dir.path()).unwrap();
    assert!(created);
    let (loaded, created) = ClusterCa::load_or_create(dir.path()).unwrap();
    assert!(!created);
    assert_eq!(made.pin(), loaded.pin());
    assert_eq!(
        Pin::of_pem(loaded.cert_pem(), "ca.pem").unwrap(),
        made.pin()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(mycluster_tls::CA_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_loaded_ca_signs_certificates_its_pin_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let (made, _) = ClusterCa::load_or_create(dir.path()).unwrap();
    let loaded = ClusterCa::load(dir.path()).unwrap().unwrap();
    let addr = serve_once(&loaded, &["localhost".into()]).await;
    assert_eq!(talk(addr, made.pin(), "localhost").await.unwrap(), b"hello");
}

#[test]
fn a_key_without_its_certificate_is_made_again() {
    // A save cut short between the key and the certificate: no one saw that CA's pin.
    let dir = tempfile::tempdir().unwrap();
    let (made, _) = ClusterCa::load_or_create(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join(mycluster_tls::CA_CERT_FILE)).unwrap();
    let (again, created) = ClusterCa::load_or_create(dir.path()).unwrap();
    assert!(created);
    assert_ne!(again.pin(), made.pin());
    assert_eq!(
        ClusterCa::load(dir.path()).unwrap().unwrap().pin(),
        again.pin()
    );
}
