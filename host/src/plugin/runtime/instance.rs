//! A loaded plugin: its instances (one per worker, made again from the
//! `InstancePre` after a trap), a call over a packed batch within its
//! limits, and what a failed call becomes.

use super::*;

pub(super) struct Instance {
    pub(super) store: Store<HostState>,
    pub(super) plugin: Plugin,
}

/// A plugin ready to process batches: its compiled form, its config, and
/// a live instance (re-made after any trap).
pub struct LoadedPlugin {
    pub(super) name: Arc<str>,
    /// Where it came from: a path, or `bundled:NAME`.
    pub(super) source: String,
    /// Keeps the runtime, and so the epoch ticker that enforces time
    /// budgets, alive as long as the plugin.
    pub(super) _runtime: Arc<Runtime>,
    pub(super) compiled: Compiled,
    /// The JSON config given to every new instance's `init`.
    pub(super) config: String,
    pub(super) limits: PluginLimits,
    pub(super) info: Info,
    /// `None` after a trap, until the next call makes a fresh one.
    pub(super) instance: Option<Instance>,
    /// What successful calls added to the plugin's counters since they
    /// were last taken ([`LoadedPlugin::take_counts`]).
    pub(super) counts: Counts,
}

impl LoadedPlugin {
    /// Whether it is one of sluice's own bundled plugins, whose
    /// replacements are valid JSON objects by construction (and tested so).
    pub fn bundled(&self) -> bool {
        self.source.starts_with("bundled:")
    }

    /// The time budget of one call.
    pub fn time_budget(&self) -> std::time::Duration {
        self.limits.time_budget
    }

    /// The linear memory one instance may have, in bytes.
    pub fn memory_limit(&self) -> usize {
        self.limits.memory
    }

    /// What the plugin said about itself at `init`.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn hash(&self) -> &str {
        &self.compiled.hash
    }

    /// Where the plugin came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The plugin's version and content hash, for dead letters.
    pub fn version(&self) -> String {
        format!(
            "{} (sha256:{})",
            self.info.version,
            &self.compiled.hash[..16]
        )
    }

    /// The same plugin, compiled code, config and limits, without a live
    /// instance: what [`LoadedPlugin::replica`] copies.
    pub fn detached(&self) -> LoadedPlugin {
        LoadedPlugin {
            name: self.name.clone(),
            source: self.source.clone(),
            _runtime: self._runtime.clone(),
            compiled: self.compiled.clone(),
            config: self.config.clone(),
            limits: self.limits,
            info: self.info.clone(),
            instance: None,
            counts: Counts::new(),
        }
    }

    /// Another instance of the same compiled plugin with the same config,
    /// `init`-ed afresh: what a transform with `concurrency` above 1 runs
    /// on its other threads. It shares nothing with this one but the
    /// compiled code.
    pub fn replica(&self) -> Result<LoadedPlugin, PluginError> {
        let mut plugin = self.detached();
        plugin.info = plugin.fresh_instance()?;
        Ok(plugin)
    }

    pub(super) fn fresh_instance(&mut self) -> Result<Info, PluginError> {
        let outputs = Outputs::default();
        let state = HostState {
            // No capability but output: no files, env, args, sockets or
            // stdin; stdout and stderr go to the host's logs, bounded.
            wasi: WasiCtx::builder()
                .stdout(outputs.stdout.clone())
                .stderr(outputs.stderr.clone())
                .build(),
            table: ResourceTable::new(),
            limits: Limiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory)
                    .instances(self.limits.instances as usize)
                    .tables(self.limits.tables as usize)
                    .memories(self.limits.memories as usize)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_refused: false,
                memory_peak: 0,
            },
            plugin: self.name.clone(),
            outputs,
            counting: Counts::new(),
            count_refused: false,
        };
        let mut store = Store::new(&self.compiled.engine, state);
        store.limiter(|s| &mut s.limits);
        let calls = self.compiled.calls.clone();
        let _call = calls.enter();
        store.set_epoch_deadline(self.deadline_ticks());
        let name = self.name.clone();
        let limits = self.limits;
        let trap = |e: wasmtime::Error, store: &Store<HostState>| {
            let stderr = store.data().outputs.take_failed(&name);
            let kind = classify(&e, store.data().limits.memory_refused);
            PluginError::InitTrap {
                plugin: name.to_string(),
                kind,
                message: describe(kind, &e, &limits, &stderr),
            }
        };
        let plugin = match self.compiled.pre.instantiate(&mut store) {
            Ok(p) => p,
            Err(e) => return Err(trap(e, &store)),
        };
        let info = match plugin.call_init(&mut store, &self.config) {
            Ok(r) => r,
            Err(e) => return Err(trap(e, &store)),
        }
        .map_err(|message| PluginError::Init {
            plugin: self.name.to_string(),
            message,
        })?;
        store.data().outputs.flush(&self.name);
        self.instance = Some(Instance { store, plugin });
        Ok(info)
    }

    pub(super) fn deadline_ticks(&self) -> u64 {
        (self.limits.time_budget.as_micros() / TICK.as_micros()) as u64 + 1
    }

    /// What the plugin counted (`count`) in the calls that succeeded since
    /// the last time: the caller adds it to the transform's metrics.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// The largest linear memory the current instance has been given, in
    /// bytes (0 when there is none): what the plugin's state costs.
    pub fn memory_peak(&self) -> usize {
        self.instance
            .as_ref()
            .map_or(0, |i| i.store.data().limits.memory_peak)
    }

    /// Whether the current instance was dropped after a trap.
    pub fn needs_restart(&self) -> bool {
        self.instance.is_none()
    }

    /// Process one packed batch. After a trap, timeout or memory
    /// exhaustion the instance is dropped; the next call makes a new one.
    pub fn process(&mut self, data: &[u8], ends: &[u32]) -> Result<Verdicts, CallError> {
        if self.instance.is_none() {
            self.fresh_instance().map_err(|e| CallError {
                kind: match &e {
                    PluginError::InitTrap { kind, .. } => *kind,
                    _ => ErrorKind::PluginError,
                },
                message: format!("restarting the plugin failed: {e}"),
            })?;
        }
        let ticks = self.deadline_ticks();
        let inst = self.instance.as_mut().expect("instance was just made");
        let calls = self.compiled.calls.clone();
        let call = calls.enter();
        inst.store.set_epoch_deadline(ticks);
        inst.store.data_mut().counting.clear();
        let result = inst.plugin.call_process(&mut inst.store, data, ends);
        drop(call);
        let counted = std::mem::take(&mut inst.store.data_mut().counting);
        let outputs = &inst.store.data().outputs;
        match result {
            Ok(Ok(v)) => {
                for (name, n) in counted {
                    add_count(&mut self.counts, &name, n);
                }
                outputs.flush(&self.name);
                check_verdicts(&v, data.len(), ends.len(), self.info.outputs.len()).map(|()| v)
            }
            Ok(Err(message)) => {
                outputs.take_failed(&self.name);
                Err(CallError {
                    kind: ErrorKind::PluginError,
                    message,
                })
            }
            Err(e) => {
                let stderr = outputs.take_failed(&self.name);
                let kind = classify(&e, inst.store.data().limits.memory_refused);
                self.instance = None;
                Err(CallError {
                    kind,
                    message: describe(kind, &e, &self.limits, &stderr),
                })
            }
        }
    }
}
