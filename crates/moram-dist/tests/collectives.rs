//! Two Gloo processes over 127.0.0.1: collectives give the right values, and a worker that dies
//! makes its peer fail within the timeout with an error that names the dead rank.
//!
//! The workers are this test binary again, running one of the `#[ignore]`d worker tests below
//! (started with `--ignored --exact`), with torchrun's variables set by [`run_local`].

use moram_dist::launch::{run_local, LocalLaunch};
use moram_dist::{Backend, Group, ReduceOp};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

fn launch(worker: &str, out: &std::path::Path, timeout_s: &str) -> moram_dist::launch::Outcome {
    let exe = std::env::current_exe().expect("test executable");
    let args =
        vec!["--ignored".into(), "--exact".into(), worker.into(), "--nocapture".into(), "--test-threads=1".into()];
    let mut launch = LocalLaunch::new(2);
    launch.envs = vec![
        ("MORAM_DIST_TEST_OUT".into(), out.display().to_string()),
        ("MORAM_DIST_TIMEOUT".into(), timeout_s.into()),
        ("OMP_NUM_THREADS".into(), "1".into()),
    ];
    launch.log_dir = Some(out.to_path_buf());
    launch.grace = Duration::from_secs(30);
    launch.limit = Some(Duration::from_secs(120));
    run_local(&exe, &args, &launch).expect("workers start")
}

#[test]
fn two_ranks_all_reduce_broadcast_barrier_gather() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let outcome = launch("worker_collectives", dir, "60");
    assert_eq!(outcome.first_failure, None, "{outcome:?}");
    for rank in 0..2 {
        let text = std::fs::read_to_string(dir.join(format!("rank{rank}.txt"))).expect("worker wrote its result");
        assert_eq!(text, "ok", "rank {rank}");
    }
}

#[test]
#[ignore = "worker of two_ranks_all_reduce_broadcast_barrier_gather"]
fn worker_collectives() {
    let group = Group::from_env(Backend::Gloo).expect("group");
    assert_eq!(group.world(), 2);
    let r = group.rank() as f32;
    let mut t = Tensor::from_slice(&[r + 1.0, 2.0 * (r + 1.0), -r]);
    group.all_reduce(&mut t, ReduceOp::Sum).expect("sum");
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![3.0, 6.0, -1.0]);
    let mut mean = Tensor::from_slice(&[r, 1.0]);
    group.all_reduce(&mut mean, ReduceOp::Mean).expect("mean");
    assert_eq!(Vec::<f32>::try_from(&mean).unwrap(), vec![0.5, 1.0]);
    let mut ints = Tensor::from_slice(&[1i64]);
    assert!(group.all_reduce(&mut ints, ReduceOp::Mean).is_err(), "no integer mean");
    let mut m = Tensor::from_slice(&[r, 10.0 - r]);
    group.all_reduce(&mut m, ReduceOp::Max).expect("max");
    assert_eq!(Vec::<f32>::try_from(&m).unwrap(), vec![1.0, 10.0]);
    // Several tensors of different shapes in one buffer.
    let mut many =
        vec![Tensor::ones([2, 3], (Kind::Float, tch::Device::Cpu)) * f64::from(r + 1.0), Tensor::from_slice(&[r])];
    group.all_reduce_sum_many(&mut many).expect("sum many");
    assert_eq!(Vec::<f32>::try_from(&many[0].reshape([-1])).unwrap(), vec![3.0; 6]);
    assert_eq!(Vec::<f32>::try_from(&many[1]).unwrap(), vec![1.0]);
    // Broadcast from rank 1.
    let mut b = vec![Tensor::from_slice(&[r, r, r]), Tensor::from_slice(&[100.0 + r])];
    group.broadcast_many(&mut b, 1).expect("broadcast");
    assert_eq!(Vec::<f32>::try_from(&b[0]).unwrap(), vec![1.0; 3]);
    assert_eq!(Vec::<f32>::try_from(&b[1]).unwrap(), vec![101.0]);
    group.barrier().expect("barrier");
    // Bytes of different lengths, one rank empty.
    let mine: Vec<u8> = if group.rank() == 0 { Vec::new() } else { b"hello\0world".to_vec() };
    let all = group.all_gather_bytes(&mine).expect("gather");
    assert_eq!(all, vec![Vec::new(), b"hello\0world".to_vec()]);
    let out = PathBuf::from(std::env::var("MORAM_DIST_TEST_OUT").unwrap());
    std::fs::write(out.join(format!("rank{}.txt", group.rank())), "ok").unwrap();
}

#[test]
fn a_dead_rank_is_named_by_its_peer_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let start = Instant::now();
    let outcome = launch("worker_dies", dir, "20");
    assert_eq!(outcome.first_failure, Some(1), "{outcome:?}");
    assert!(!outcome.statuses[0].success(), "rank 0 must fail too: {outcome:?}");
    let message = std::fs::read_to_string(dir.join("rank0.txt")).expect("rank 0 wrote its error");
    assert!(message.contains("rank 1 stopped"), "{message}");
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
}

#[test]
#[ignore = "worker of a_dead_rank_is_named_by_its_peer_within_the_timeout"]
fn worker_dies() {
    let group = Group::from_env(Backend::Gloo).expect("group");
    let mut t = Tensor::from_slice(&[1.0f32]);
    group.all_reduce(&mut t, ReduceOp::Sum).expect("first all-reduce");
    if group.rank() == 1 {
        // Gone without a word, as a killed process.
        std::process::exit(3);
    }
    std::thread::sleep(Duration::from_millis(200));
    let err = group.all_reduce(&mut t, ReduceOp::Sum).expect_err("the peer is gone");
    let out = PathBuf::from(std::env::var("MORAM_DIST_TEST_OUT").unwrap());
    std::fs::write(out.join("rank0.txt"), err.to_string()).unwrap();
    panic!("{err}");
}

#[test]
fn a_group_of_one_is_the_identity() {
    let group = Group::single();
    assert_eq!((group.rank(), group.world(), group.is_main()), (0, 1, true));
    let mut t = Tensor::from_slice(&[1.5f32, -2.0]);
    group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    group.broadcast(&mut t, 0).unwrap();
    group.barrier().unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.5, -2.0]);
    assert_eq!(group.all_gather_bytes(b"abc").unwrap(), vec![b"abc".to_vec()]);
}
