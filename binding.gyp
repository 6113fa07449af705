# SPDX-License-Identifier: Apache-2.0
#
# lba_status.node: SG_IO command queue, GET LBA STATUS CDB builders and reply parser.
# Linux builds everything; macOS builds the pure parts (createCommandQueue throws there);
# other systems build nothing (lib/binding.ts then reports a clear load error).
# Set LBA_STATUS_WERROR=1 to turn warnings into errors (CI); user installs never use -Werror.
# See: sg(4), ioctl(2).
{
  'variables': {
    'lba_status_werror%': '<!(node -p "process.env.LBA_STATUS_WERROR === \'1\' ? 1 : 0")',
  },
  'targets': [
    {
      'target_name': 'lba_status',
      'conditions': [
        ['OS=="linux" or OS=="mac"', {
          'sources': [
            'native/addon.cc',
            'native/js_args.cc',
            'native/lba_status.cc',
          ],
          'dependencies': [
            "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except",
          ],
          'defines': [
            'NAPI_VERSION=8',
            'NODE_ADDON_API_DISABLE_DEPRECATED',
            # A worker_thread being terminated cannot take a new JS exception; without this,
            # node-addon-api would std::terminate() the whole process in that case.
            'NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS',
          ],
          'cflags': ['-Wall', '-Wextra', '-fstack-protector-strong', '-fvisibility=hidden'],
          'cflags_cc': ['-std=c++17', '-fvisibility-inlines-hidden'],
          'cflags_cc!': ['-std=gnu++17', '-std=gnu++20', '-std=c++20'],
          'ldflags': ['-pthread'],
          'xcode_settings': {
            'CLANG_CXX_LANGUAGE_STANDARD': 'c++17',
            'GCC_SYMBOLS_PRIVATE_EXTERN': 'YES',
            'MACOSX_DEPLOYMENT_TARGET': '11.0',
            'OTHER_CFLAGS': ['-Wall', '-Wextra', '-fstack-protector-strong'],
          },
          'configurations': {
            'Release': {
              'cflags!': ['-O3'],
              'cflags': ['-O2', '-U_FORTIFY_SOURCE', '-D_FORTIFY_SOURCE=2'],
            },
          },
        }, {
          'type': 'none',
        }],
        ['OS=="linux"', {
          'sources': [
            'native/command_queue.cc',
            'native/pending_command.cc',
            'native/sg_async_queue.cc',
            'native/sg_io.cc',
          ],
          'cflags': ['-pthread'],
        }],
        ['lba_status_werror==1', {
          'cflags': ['-Werror'],
          'xcode_settings': {'GCC_TREAT_WARNINGS_AS_ERRORS': 'YES'},
        }],
      ],
    },
  ],
}
