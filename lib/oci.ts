/**
 * `lba-status/oci`: the OCI delta-volume provisioner (oci-core + oci-common are optional peer
 * dependencies, loaded on first use) and the generic provisioner API.
 */
export * from './oci/index.js';
export * from './provision/index.js';
