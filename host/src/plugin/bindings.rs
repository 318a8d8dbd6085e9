//! Every `bindgen!` of the host, in one place: the `sluice:plugin` world.
//!
//! No other host module touches raw component APIs; `runtime` uses the
//! generated [`Plugin`] and [`PluginPre`] types.
//!
//! ```ignore
//! let pre = PluginPre::new(linker.instantiate_pre(&component)?)?;
//! let plugin = pre.instantiate(&mut store)?;
//! let info = plugin.call_init(&mut store, "{}")?;
//! let verdicts = plugin.call_process(&mut store, &data, &ends)?;
//! ```

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
});
