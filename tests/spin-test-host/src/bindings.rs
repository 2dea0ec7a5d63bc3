//! Host bindings for the Spin interfaces the components import, and the cron export.

wasmtime::component::bindgen!({
    path: "wit",
    world: "spin-test:host/imports",
    imports: { default: async | trappable },
});

pub mod cron {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "spin-test:host/cron",
        exports: { default: async },
    });
}
