/** oem build --all-providers on a Flatcar-style release (test/helpers/all-providers.ts). */
import { allProvidersSuite } from './helpers/all-providers.js';
import { useBuildEnv } from './helpers/build-env.js';

useBuildEnv();
allProvidersSuite('flatcar');
