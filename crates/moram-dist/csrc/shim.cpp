// C ABI over libtorch's c10d (TCPStore, PrefixStore, ProcessGroupGloo, ProcessGroupNCCL with
// MORAM_NCCL). Every entry point returns 0 on success; on a C++ exception it returns 1 and stores
// the exception's message, malloc'ed, in *err (freed with moram_dist_free_message).
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef MORAM_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* copy_message(const char* what) {
  size_t n = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, what, n + 1);
  }
  return out;
}

template <class F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 1;
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp(c10d::ReduceOp::RedOpType::SUM);
    case 1:
      return c10d::ReduceOp(c10d::ReduceOp::RedOpType::MAX);
    case 2:
      return c10d::ReduceOp(c10d::ReduceOp::RedOpType::MIN);
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

}  // namespace

struct moram_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct moram_group {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

extern "C" {

void moram_dist_free_message(char* message) {
  std::free(message);
}

void moram_dist_free_bytes(uint8_t* bytes) {
  std::free(bytes);
}

// A TCPStore client (or the server, with is_server) under `prefix`. Blocks until `world`
// processes have connected or the timeout passes.
int moram_store_new(
    const char* host,
    uint16_t port,
    int is_server,
    int world,
    int64_t timeout_ms,
    const char* prefix,
    moram_store** out,
    char** err) {
  return guarded(err, [&] {
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = is_server != 0;
    options.numWorkers = static_cast<std::size_t>(world);
    options.waitWorkers = true;
    options.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    *out = new moram_store{c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp)};
  });
}

// A second connection to the same store (for a thread of its own).
int moram_store_clone(moram_store* store, moram_store** out, char** err) {
  return guarded(err, [&] { *out = new moram_store{store->store->clone()}; });
}

void moram_store_free(moram_store* store) {
  delete store;
}

int moram_store_set(moram_store* store, const char* key, const uint8_t* data, size_t len, char** err) {
  return guarded(err, [&] {
    std::vector<uint8_t> value(data, data + len);
    store->store->set(std::string(key), value);
  });
}

// Whether `key` exists, without waiting.
int moram_store_check(moram_store* store, const char* key, int* exists, char** err) {
  return guarded(err, [&] { *exists = store->store->check({std::string(key)}) ? 1 : 0; });
}

// The value of `key`, waiting for it up to the store's timeout; *data is malloc'ed.
int moram_store_get(moram_store* store, const char* key, uint8_t** data, size_t* len, char** err) {
  return guarded(err, [&] {
    std::vector<uint8_t> value = store->store->get(std::string(key));
    *len = value.size();
    *data = static_cast<uint8_t*>(std::malloc(value.empty() ? 1 : value.size()));
    if (*data == nullptr) {
      throw std::bad_alloc();
    }
    if (!value.empty()) {
      std::memcpy(*data, value.data(), value.size());
    }
  });
}

// A Gloo process group on `store`. The transport binds to `interface` (GLOO_SOCKET_IFNAME) when
// it is not empty, else to the address of `hostname` when that is not empty, else to this
// machine's hostname (loopback when it does not resolve), as torch.distributed does.
int moram_group_new_gloo(
    moram_store* store,
    int rank,
    int world,
    int64_t timeout_ms,
    int threads,
    const char* interface,
    const char* hostname,
    moram_group** out,
    char** err) {
  return guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    if (interface != nullptr && interface[0] != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else if (hostname != nullptr && hostname[0] != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = threads;
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, world, options);
    *out = new moram_group{group, timeout};
  });
}

// A NCCL process group (GPU builds, `nccl` feature). Tensors must be on this rank's GPU.
int moram_group_new_nccl(moram_store* store, int rank, int world, int64_t timeout_ms, moram_group** out, char** err) {
  return guarded(err, [&] {
#ifdef MORAM_NCCL
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, world, options);
    *out = new moram_group{group, timeout};
#else
    (void)store;
    (void)rank;
    (void)world;
    (void)timeout_ms;
    (void)out;
    throw std::runtime_error("moram-dist was built without the `nccl` feature");
#endif
  });
}

void moram_group_free(moram_group* group) {
  delete group;
}

// In-place all-reduce of one tensor (op: 0 sum, 1 max, 2 min), waiting for completion.
int moram_group_allreduce(moram_group* group, void* tensor, int op, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = reduce_op(op);
    options.timeout = group->timeout;
    group->backend->allreduce(tensors, options)->wait(group->timeout);
  });
}

// In-place broadcast of one tensor from `root`, waiting for completion.
int moram_group_broadcast(moram_group* group, void* tensor, int root, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = group->timeout;
    group->backend->broadcast(tensors, options)->wait(group->timeout);
  });
}

int moram_group_barrier(moram_group* group, char** err) {
  return guarded(err, [&] {
    c10d::BarrierOptions options;
    options.timeout = group->timeout;
    group->backend->barrier(options)->wait(group->timeout);
  });
}

}  // extern "C"
