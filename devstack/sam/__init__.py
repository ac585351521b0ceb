"""devstack's SAM emulation: what ``sam validate`` / ``sam local invoke`` and Lambda would do.

:mod:`~devstack.sam.template` reads ``template.yaml`` and ``samconfig.toml`` as SAM resolves
them; :mod:`~devstack.sam.invoke` runs a template function in a Lambda-shaped child process
against :mod:`~devstack.sam.runtime_api` (Lambda's Runtime API), with an X-Ray daemon
(:mod:`~devstack.sam.xray`) and, for SnapStart functions, the container credentials endpoint
(:mod:`~devstack.sam.container_credentials`). :mod:`~devstack.sam.policy` gives the verifying
stack the template's IAM policies, so a wrong resource ARN fails locally as it would on AWS.
"""
